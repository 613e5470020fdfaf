//! Generated protobuf types and tonic services for node-to-node traffic:
//! the Raft transport and the node admin service (forwarded writes, joins,
//! read-index requests). See `proto/attest.proto` for the contract.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("attest.v1");
}

pub use v1::*;
