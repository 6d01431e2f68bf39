//! Local rate limiting: Envoy's token bucket, per route or per listener. A request takes a
//! token or is answered 429 with flag RL. The bucket lives in the config snapshot; a rebuilt
//! snapshot takes over the previous one's bucket for the same route or listener when its limit
//! is unchanged ([`Buckets`]), so only a change to the limit itself starts it full again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use weft_xds::proto;

use crate::config::{ConfigError, duration};

#[derive(Debug)]
pub struct TokenBucket {
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: u32,
    /// When the last whole fill happened.
    filled: Instant,
}

/// A snapshot's token buckets by owner (the listener, or the route configuration, virtual host
/// and route), with the limit each was built from: what the next snapshot may take over.
#[derive(Debug, Default)]
pub struct Buckets {
    /// The previous snapshot's buckets.
    previous: HashMap<String, (proto::RateLimit, Arc<TokenBucket>)>,
    /// This snapshot's, filled while it is built.
    kept: Mutex<HashMap<String, (proto::RateLimit, Arc<TokenBucket>)>>,
}

impl Buckets {
    /// An empty set for a snapshot built after the one that holds `previous`.
    pub fn after(previous: Option<&Buckets>) -> Buckets {
        let previous = previous
            .map(|p| p.kept.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default();
        Buckets {
            previous,
            kept: Mutex::default(),
        }
    }

    /// The bucket of `owner` for `rate_limit`: the previous snapshot's when its limit is the
    /// same (its tokens carry over), else a new full one. `None` without a local limit.
    pub fn bucket(
        &self,
        owner: String,
        rate_limit: Option<&proto::RateLimit>,
        resource: &str,
        at: &str,
    ) -> Result<Option<Arc<TokenBucket>>, ConfigError> {
        let Some(config) = rate_limit.filter(|r| r.local.is_some()) else {
            return Ok(None);
        };
        let bucket = match self.previous.get(&owner) {
            Some((was, bucket)) if was == config => bucket.clone(),
            _ => match TokenBucket::build(Some(config), resource, at)? {
                Some(b) => Arc::new(b),
                None => return Ok(None),
            },
        };
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owner, (*config, bucket.clone()));
        Ok(Some(bucket))
    }
}

impl TokenBucket {
    /// `None` when `rate_limit` has no local limit. `at` is the field path of `rate_limit`.
    pub fn build(
        rate_limit: Option<&proto::RateLimit>,
        resource: &str,
        at: &str,
    ) -> Result<Option<TokenBucket>, ConfigError> {
        let Some(local) = rate_limit.and_then(|r| r.local.as_ref()) else {
            return Ok(None);
        };
        let field = |f: &str| format!("{at}.local.{f}");
        if local.max_tokens == 0 {
            return Err(ConfigError::new(
                resource,
                field("maxTokens"),
                "must be at least 1",
            ));
        }
        let fill_interval = match &local.fill_interval {
            Some(d) => duration(d, resource, &field("fillInterval"))?,
            None => {
                return Err(ConfigError::new(
                    resource,
                    field("fillInterval"),
                    "required",
                ));
            }
        };
        if fill_interval < Duration::from_millis(50) {
            return Err(ConfigError::new(
                resource,
                field("fillInterval"),
                "must be at least 50ms (as Envoy)",
            ));
        }
        Ok(Some(TokenBucket {
            max_tokens: local.max_tokens,
            tokens_per_fill: local.tokens_per_fill.max(1),
            fill_interval,
            state: Mutex::new(State {
                tokens: local.max_tokens,
                filled: Instant::now(),
            }),
        }))
    }

    /// Takes a token if there is one.
    pub fn try_acquire(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let fills = now.duration_since(s.filled).as_nanos() / self.fill_interval.as_nanos().max(1);
        if fills > 0 {
            let added =
                u64::from(self.tokens_per_fill).saturating_mul(fills.min(u64::MAX as u128) as u64);
            s.tokens = (u64::from(s.tokens) + added).min(u64::from(self.max_tokens)) as u32;
            // Keep the fill phase: the next fill is due one interval after the last whole one.
            s.filled += self.fill_interval * (fills.min(u32::MAX as u128) as u32);
        }
        if s.tokens == 0 {
            return false;
        }
        s.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(yaml: &str) -> TokenBucket {
        let r: proto::RateLimit = yaml_serde::from_str(yaml).expect("config");
        TokenBucket::build(Some(&r), "route", "rateLimit")
            .expect("builds")
            .expect("has a local limit")
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_empties_and_refills() {
        let b = bucket("{local: {maxTokens: 3, tokensPerFill: 2, fillInterval: 1s}}");
        assert!((0..3).all(|_| b.try_acquire()));
        assert!(!b.try_acquire());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!b.try_acquire(), "no fill before the interval");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.try_acquire() && b.try_acquire());
        assert!(!b.try_acquire());
        // Never more than max_tokens, however long it waits.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..3).all(|_| b.try_acquire()));
        assert!(!b.try_acquire());
    }

    #[test]
    fn bad_limits_name_the_field() {
        for (yaml, field) in [
            (
                "{local: {maxTokens: 0, fillInterval: 1s}}",
                "rateLimit.local.maxTokens",
            ),
            ("{local: {maxTokens: 5}}", "rateLimit.local.fillInterval"),
            (
                "{local: {maxTokens: 5, fillInterval: 0.01s}}",
                "rateLimit.local.fillInterval",
            ),
        ] {
            let r: proto::RateLimit = yaml_serde::from_str(yaml).unwrap();
            let err = TokenBucket::build(Some(&r), "route", "rateLimit").unwrap_err();
            assert_eq!(err.field, field, "{yaml}");
        }
    }
}
