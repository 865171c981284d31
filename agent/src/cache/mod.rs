//! What the agent holds per profile between requests.

pub mod session;
