//! `pisgate sandbox --protocol op`: a strict simulator of OP's PSD2 payment API (FAPI). See
//! docs/sandbox-op.md.
