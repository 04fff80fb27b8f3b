//! The ledger's parsers of untrusted bytes (event.json, verdict.json, commit objects, commit
//! messages and their trailers, trees, capture times, idempotency keys): never a panic, and
//! an accepted event.json is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    camledger_eventstore::fuzz_parsers(data);
});
