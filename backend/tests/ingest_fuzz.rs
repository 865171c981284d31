//! Property tests of the ingest decode path. Arbitrary bytes and mutated
//! valid bodies, in protobuf, JSON and gzip, never panic: they decode to a
//! request or fail with a 4xx error.

use std::io::Write;

use chrono::Utc;
use flate2::Compression as Level;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use tollgate_backend::ingest::TypeMapping;
use tollgate_backend::ingest::decode::{Compression, Encoding, decode_body};
use tollgate_backend::ingest::points::extract;

const LIMIT: usize = 1024 * 1024;

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/support/claude/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the sample is readable")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Level::fast());
    encoder.write_all(bytes).expect("gzip writes to memory");
    encoder.finish().expect("gzip finishes")
}

/// Runs the whole decode path; a failure must be a client error.
fn decode_and_extract(body: &[u8], encoding: Encoding, compression: Compression) {
    match decode_body(body, encoding, compression, LIMIT) {
        Ok(request) => {
            let types = TypeMapping::parse("cacheCreation1h=cacheCreation").expect("valid");
            let _ = extract(
                &request,
                "fuzz@example.com",
                &types,
                Utc::now(),
                encoding == Encoding::Json,
            );
        }
        Err(error) => {
            let status = error.status();
            assert!((400..500).contains(&status), "{error} has status {status}");
            assert!(!error.to_string().is_empty());
        }
    }
}

/// A mutation of a valid body: flip, overwrite, insert or cut bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1..64usize).prop_map(|(at, length)| Mutation::Remove(at, length)),
    ]
}

fn mutate(body: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut body = body.to_vec();
    for mutation in mutations {
        if body.is_empty() {
            break;
        }
        let length = body.len();
        match mutation {
            Mutation::Flip(at, bits) => body[at % length] ^= bits,
            Mutation::Set(at, byte) => body[at % length] = *byte,
            Mutation::Insert(at, bytes) => {
                let at = at % (length + 1);
                body.splice(at..at, bytes.iter().copied());
            }
            Mutation::Truncate(at) => body.truncate(at % length),
            Mutation::Remove(at, count) => {
                let at = at % length;
                let end = (at + count).min(length);
                body.drain(at..end);
            }
        }
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_and_extract(&body, Encoding::Protobuf, Compression::None);
        decode_and_extract(&body, Encoding::Json, Compression::None);
        decode_and_extract(&body, Encoding::Protobuf, Compression::Gzip);
    }

    #[test]
    fn mutated_protobuf_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let body = mutate(&sample("metrics-http-protobuf.pb"), &mutations);
        decode_and_extract(&body, Encoding::Protobuf, Compression::None);
        decode_and_extract(&gzip(&body), Encoding::Protobuf, Compression::Gzip);
    }

    #[test]
    fn mutated_json_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let body = mutate(&sample("metrics-http-json.json"), &mutations);
        decode_and_extract(&body, Encoding::Json, Compression::None);
    }

    #[test]
    fn mutated_gzip_never_panics(mutations in prop::collection::vec(mutation(), 1..4)) {
        let body = mutate(&gzip(&sample("metrics-http-protobuf.pb")), &mutations);
        decode_and_extract(&body, Encoding::Protobuf, Compression::Gzip);
    }
}

#[test]
fn samples_decode_to_four_counted_points() {
    let types = TypeMapping::default();
    for (name, encoding) in [
        ("metrics-http-protobuf.pb", Encoding::Protobuf),
        ("metrics-http-json.json", Encoding::Json),
    ] {
        let request = decode_body(&sample(name), encoding, Compression::None, LIMIT)
            .expect("the sample decodes");
        let extracted = extract(&request, "ann@example.com", &types, Utc::now(), true)
            .expect("the token usage is readable");
        assert_eq!(extracted.points.len(), 4, "{name}");
        assert_eq!(extracted.rejected_count(), 0, "{name}");
    }
}
