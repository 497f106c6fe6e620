//! The standard ONNX `Attention` op (opset 23/24).

use super::probe::Ctx;
use super::report::Report;
use super::Fusion;

pub fn find(_ctx: &Ctx, _out: &mut Vec<Fusion>, _report: &mut Report) {}
