//! The ledger.v1 wire contract: generated messages and service stubs, plus the one place
//! where wire messages become checked core types and back ([`convert`]).

#[allow(clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("ledger.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ledger_descriptor.bin"));

pub mod convert;
