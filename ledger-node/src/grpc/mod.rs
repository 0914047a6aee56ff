//! The ledger.v1 gRPC service: authentication, request conversion (via `proto::convert`),
//! the append pipeline, reads from the store, verification and export. Status codes are
//! chosen in [`status`] only.

pub mod auth;
pub mod service;
pub mod status;
