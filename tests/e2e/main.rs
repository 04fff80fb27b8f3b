//! End-to-end tests: the real `camledger` binary, real HTTP, the real `git`.

mod helpers;

mod auth;
mod bad_input;
mod cli;
mod concurrency;
mod crash;
mod ingest;
mod reading;
