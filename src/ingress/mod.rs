//! Ingress: the public listener. TLS termination ([`tls`]), connection
//! limits and draining ([`listener`]), and per-request routing,
//! authentication and body limits ([`service`]).

pub mod listener;
pub mod service;
pub mod tls;
