//! Ingress: the public listener. TLS termination ([`tls`]), connection
//! limits and draining ([`listener`]), per-request routing, authentication
//! and body limits ([`service`]), sender tokens ([`auth`]) and the bound on
//! bodies held before authentication ([`budget`]).

pub mod auth;
pub mod budget;
pub mod listener;
pub mod service;
pub mod tls;
