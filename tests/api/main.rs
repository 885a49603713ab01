//! Integration tests: the real service against the real PostgreSQL cluster that
//! `scripts/test.sh` starts (`PISGATE_TEST_DATABASE_URL`), one fresh database per test.

mod api_keys;
mod auth;
mod banks;
mod binding;
mod certificate;
mod cli;
mod consent;
mod console;
mod console_lockout;
mod errors;
mod events;
mod hardening;
mod health;
mod helpers;
mod horizon;
mod key_takeover;
mod layering;
mod ledger;
mod logs;
mod metrics;
mod nordea;
mod outages;
mod payees;
mod payment_search;
mod payments;
mod pooler;
mod replicas;
mod scenarios;
mod serve;
mod tamper;
mod traces;
mod truth;
mod webhook_endpoints;
mod webhooks;
mod workers;
