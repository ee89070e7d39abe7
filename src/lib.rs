//! hookrelay: a webhook relay and fan-out gateway.
//!
//! One callback's path through the modules (see `docs/architecture.md`):
//! [`ingress`] (TLS, route, auth, limits) → [`intake`] (parse, idempotency)
//! → [`store`] (group commit; only then 2xx) → [`delivery`] (dispatcher,
//! per-subscriber lanes, signed POSTs, retries, circuit breakers) → dead
//! letters, inspected and replayed through [`admin`] (and its
//! [`console`]). [`gateway`] wires them together from a
//! [`config::Config`]. [`sink`] is a local subscriber for development
//! (`hookrelay sink`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod answer;
pub mod cli;
pub mod config;
pub mod console;
pub mod delivery;
pub mod gateway;
pub mod ingress;
pub mod intake;
pub mod metrics;
pub mod pem;
pub mod reconcile;
pub mod signing;
pub mod sink;
pub mod store;

pub use config::Config;
pub use gateway::{Gateway, GatewayError};
