//! `com.microsoft` MultiHeadAttention / GroupQueryAttention / Attention.

use super::probe::Ctx;
use super::report::Report;
use super::Fusion;

pub fn find(_ctx: &Ctx, _out: &mut Vec<Fusion>, _report: &mut Report) {}
