//! attestd: the node daemon of the attestd attestation service.
//!
//! Module map (see `ARCHITECTURE.md`): `config` (TOML + env), `api` (all
//! HTTP), `server` (TLS serving), `pki` (dev certificates), `client`
//! (operator-command HTTP client), `evidence` (TEE verifiers), `policy`
//! (the MAA policy language).
#![forbid(unsafe_code)]

pub mod api;
pub mod attest;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod evidence;
pub mod pki;
pub mod policy;
pub mod providers;
pub mod server;
pub mod signing;
pub mod token;
