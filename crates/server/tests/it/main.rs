//! Integration tests: the real server over HTTP, on PostgreSQL + S3 (Garage) and on the
//! embedded default (SQLite + directory). One binary, so the suite links once.

mod audit;
mod audit_complete;
mod auth;
mod cli;
mod client_cli;
mod common;
mod direct;
mod distribution;
mod docs;
mod faults;
mod fleet;
mod fleet_push;
mod fleet_trust;
mod flood;
mod gate;
mod hardening;
mod mirror;
mod packages;
mod readme;
mod reads;
mod rollback;
mod rollouts;
mod signing;
mod sigstore;
mod stats;
mod tokens;
mod tus;
mod tus_concat;
mod web;
