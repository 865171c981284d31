//! A harness that starts Tollgate's real components for end-to-end tests.
//!
//! [`Stack`] starts, each on 127.0.0.1 with a free port and in its own
//! temporary folder, the local OIDC provider (`tests/support/oidc`, npm
//! oidc-provider), `moto_server` as AWS STS behind a [`CountingProxy`], and
//! optionally `tollgate serve`. It writes the agent configuration and an
//! `~/.aws/config` whose profiles run the shim through `credential_process`
//! into a throwaway HOME, and returns the environment that the shim, the
//! AWS CLI and boto3 run with. Every process the harness starts is stopped
//! by its PID when its guard is dropped, and so is an agent that a shim
//! started inside the stack.
//!
//! The binaries come from the workspace build: `TOLLGATE_BIN_DIR` when set,
//! else the target folder that holds the test executable. The Python tools
//! come from the virtual environment that `scripts/install-deps.sh` creates
//! (`TOLLGATE_VENV`, default `/var/cache/tollgate/venv`).

pub mod backend;
pub mod desktop;
pub mod http;
pub mod jwt;
pub mod locate;
pub mod moto;
pub mod oidc;
pub mod process;
pub mod proxy;
pub mod stack;

pub use backend::Backend;
pub use desktop::Desktop;
pub use moto::Moto;
pub use oidc::{OidcOptions, OidcProvider};
pub use process::{Service, wait_for};
pub use proxy::CountingProxy;
pub use stack::{ProfileSpec, RunOutput, Stack, StackBuilder};
