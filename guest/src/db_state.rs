//! Per-database send state, kept in `app_config` so that it survives
//! restarts and shows in the status: whether sending is paused and why, the
//! failure count and next retry time for backoff, the last delivery and the
//! last error.

use crate::bindings::agros::sync::app_config;
use crate::errors::{self, SyncError};

/// Unix time in milliseconds, from `wasi:clocks`.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default)]
pub struct DatabaseState {
    /// The reason sending is paused, or `None` when it is not paused.
    pub paused: Option<String>,
    /// Consecutive failed attempts, 0 while the server responds.
    pub failures: u32,
    /// No send before this time (Unix milliseconds).
    pub retry_at: Option<u64>,
    pub last_success_at: Option<u64>,
    pub last_error: Option<SyncError>,
}

struct Keys {
    paused: String,
    failures: String,
    retry_at: String,
    last_success_at: String,
    last_error: String,
}

fn keys(database_key: &str) -> Keys {
    Keys {
        paused: format!("parser-{database_key}-paused"),
        failures: format!("parser-{database_key}-failures"),
        retry_at: format!("parser-{database_key}-retry-at"),
        last_success_at: format!("parser-{database_key}-last-success-at"),
        last_error: format!("parser-{database_key}-last-error"),
    }
}

impl DatabaseState {
    pub fn load(database_key: &str) -> Self {
        let keys = keys(database_key);
        let number = |key: &str| app_config::get(key).and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
        Self {
            paused: app_config::get(&keys.paused).filter(|v| !v.is_empty()),
            failures: number(&keys.failures).unwrap_or(0) as u32,
            retry_at: number(&keys.retry_at),
            last_success_at: number(&keys.last_success_at),
            last_error: app_config::get(&keys.last_error).and_then(|v| errors::from_json(&v)),
        }
    }

    /// Writes the fields that differ from `before`.
    pub fn save(&self, database_key: &str, before: &DatabaseState) {
        let keys = keys(database_key);
        let number = |value: Option<u64>| value.map(|v| v.to_string()).unwrap_or_default();
        if self.paused != before.paused {
            app_config::set(&keys.paused, self.paused.as_deref().unwrap_or_default());
        }
        if self.failures != before.failures {
            app_config::set(&keys.failures, &self.failures.to_string());
        }
        if self.retry_at != before.retry_at {
            app_config::set(&keys.retry_at, &number(self.retry_at));
        }
        if self.last_success_at != before.last_success_at {
            app_config::set(&keys.last_success_at, &number(self.last_success_at));
        }
        let text = self.last_error.as_ref().map(errors::to_json).unwrap_or_default();
        if text != before.last_error.as_ref().map(errors::to_json).unwrap_or_default() {
            app_config::set(&keys.last_error, &text);
        }
    }

    /// Records a delivery. The server responds, so backoff ends.
    pub fn succeeded(&mut self, now: u64) {
        self.failures = 0;
        self.retry_at = None;
        self.paused = None;
        self.last_success_at = Some(now);
        self.last_error = None;
    }

    /// Records a transient failure and schedules the next attempt.
    pub fn failed(&mut self, error: &SyncError, now: u64, initial_ms: u64, max_ms: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let delay = match error.retry_after {
            Some(seconds) => u64::from(seconds) * 1000,
            None => backoff_ms(self.failures, initial_ms, max_ms, random_fraction()),
        };
        let at = now + delay;
        self.retry_at = Some(at);
        self.last_error = Some(error.clone());
        at
    }

    /// Stops sending until the keys work again.
    pub fn pause(&mut self, error: &SyncError) {
        self.paused = Some(format!("{}: {}", errors::kind_name(error.kind), error.detail));
        self.last_error = Some(error.clone());
    }
}

/// Exponential backoff with jitter: `initial * 2^(failures-1)`, at most
/// `max`, then scaled by a factor in [0.5, 1.0) so that many clients coming
/// back at once do not retry in step.
pub fn backoff_ms(failures: u32, initial_ms: u64, max_ms: u64, fraction: f64) -> u64 {
    let exponent = failures.saturating_sub(1).min(32);
    let full = initial_ms.saturating_mul(1u64 << exponent).min(max_ms);
    let jittered = full as f64 * (0.5 + fraction.clamp(0.0, 1.0) * 0.5);
    (jittered as u64).max(1)
}

fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("wasi:random is always available");
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff_ms(1, 1000, 300_000, 1.0), 1000);
        assert_eq!(backoff_ms(2, 1000, 300_000, 1.0), 2000);
        assert_eq!(backoff_ms(5, 1000, 300_000, 1.0), 16_000);
        assert_eq!(backoff_ms(20, 1000, 300_000, 1.0), 300_000);
    }

    #[test]
    fn jitter_halves_at_most() {
        assert_eq!(backoff_ms(3, 1000, 300_000, 0.0), 2000);
        assert_eq!(backoff_ms(3, 1000, 300_000, 0.5), 3000);
    }
}
