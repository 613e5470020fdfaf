//! attestd: the node daemon of the attestd attestation service.
//!
//! Module map (see `ARCHITECTURE.md`): `config` (TOML + env), `api` (all
//! HTTP), `server` (TLS serving), `pki` (dev certificates), `client`
//! (operator-command HTTP client), `evidence` (TEE verifiers), `policy`
//! (the MAA policy language).
//!
//! Without the default `daemon` feature only the parts that judge untrusted
//! bytes remain (`evidence`, `policy`, `token`, `auth`): the fuzz build.
#![forbid(unsafe_code)]

#[cfg(feature = "daemon")]
pub mod api;
#[cfg(feature = "daemon")]
pub mod attest;
pub mod auth;
#[cfg(feature = "daemon")]
pub mod cli;
pub mod client;
#[cfg(feature = "daemon")]
pub mod config;
pub mod evidence;
pub mod fuzzing;
#[cfg(feature = "daemon")]
pub mod pki;
pub mod policy;
#[cfg(feature = "daemon")]
pub mod providers;
pub mod server;
#[cfg(feature = "daemon")]
pub mod signing;
pub mod token;
