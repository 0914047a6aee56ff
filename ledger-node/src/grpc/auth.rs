//! Bearer-token authentication, per-call permissions, and a per-token rate limit.
//!
//! Every call carries `authorization: Bearer <token>`. Site tokens may append, only as
//! their own site, and read; auditor, regulator and admin tokens may read. A token bucket
//! per principal (one second of burst) answers RESOURCE_EXHAUSTED beyond the configured
//! rate.

use crate::network::{Network, Principal};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use tonic::{Request, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Append,
    Read,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
pub struct RateLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<Principal, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_second", &self.per_second)
            .finish()
    }
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, who: &Principal, cost: f64) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let b = buckets.entry(who.clone()).or_insert(Bucket {
            tokens: self.per_second,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second)
            .min(self.per_second);
        b.at = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// Who is calling, if allowed to do `access`; `cost` is the number of operations (events
/// in a batch) charged to the rate limit.
pub fn authorize<T>(
    network: &Network,
    limiter: &RateLimiter,
    req: &Request<T>,
    access: Access,
    cost: usize,
) -> Result<Principal, Status> {
    let principal = authenticate(network, req, access)?;
    charge(limiter, &principal, cost)?;
    Ok(principal)
}

/// Who is calling, and whether they may do `access`; charges nothing.
pub fn authenticate<T>(
    network: &Network,
    req: &Request<T>,
    access: Access,
) -> Result<Principal, Status> {
    let principal = network
        .principal(bearer(req)?)
        .ok_or_else(|| Status::unauthenticated("unknown token"))?;
    if access == Access::Append && !matches!(principal, Principal::Site(_)) {
        return Err(Status::permission_denied(format!(
            "{principal} may read but not append; use a site's token"
        )));
    }
    Ok(principal)
}

/// The bearer token a call carries in its `authorization` metadata.
pub fn bearer<T>(req: &Request<T>) -> Result<&str, Status> {
    let header = req.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "missing authorization metadata: send 'authorization: Bearer <token>'",
        )
    })?;
    let text = header
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
    Ok(token.trim())
}

/// Takes `cost` calls (at least one) from the principal's rate limit.
pub fn charge(limiter: &RateLimiter, principal: &Principal, cost: usize) -> Result<(), Status> {
    if !limiter.take(principal, cost.max(1) as f64) {
        return Err(Status::resource_exhausted(format!(
            "rate limit for {principal} exceeded; slow down and retry"
        )));
    }
    Ok(())
}
