//! Readiness flags a service keeps up to date for `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ReadyCheck;

/// Whether the service currently reaches RabbitMQ and Postgres.
#[derive(Debug, Default)]
pub struct Health {
    broker: AtomicBool,
    database: AtomicBool,
}

impl Health {
    /// Both flags down.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records whether the broker connection is up.
    pub fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Relaxed);
    }

    /// Whether the broker connection is up.
    pub fn broker_up(&self) -> bool {
        self.broker.load(Ordering::Relaxed)
    }

    /// Records whether the database answered.
    pub fn set_database(&self, up: bool) {
        self.database.store(up, Ordering::Relaxed);
    }

    /// The `/readyz` check over both flags.
    pub fn check(self: &Arc<Self>) -> ReadyCheck {
        let me = self.clone();
        Arc::new(move || {
            let mut missing = Vec::new();
            if !me.broker.load(Ordering::Relaxed) {
                missing.push("RabbitMQ unreachable");
            }
            if !me.database.load(Ordering::Relaxed) {
                missing.push("Postgres unreachable");
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join("; "))
            }
        })
    }
}
