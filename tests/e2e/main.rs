//! End-to-end tests: the real `camledger` binary, real HTTP, the real `git`.

// Helpers are `pub` for the test modules; nothing here is reachable from outside.
#![allow(unreachable_pub)]

mod helpers;

mod anchors;
mod auth;
mod backup;
mod bad_input;
mod cli;
mod concurrency;
mod crash;
mod crash_recovery;
mod dashboard;
mod explain;
mod first_hour;
mod git_clone;
mod hostile_backup;
mod hostile_clients;
mod hostile_images;
mod ingest;
mod metrics;
mod openapi;
mod push;
mod quarantine;
mod rate_limits;
mod reading;
mod readme;
mod readmodel;
mod signing_keys;
mod tamper;
mod tokens;
mod upload_links;
mod verdicts;
mod webhooks;
