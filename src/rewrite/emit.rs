//! Building the fused `ai.flashattn::FlashAttention` nodes (and the few helper nodes they need: layout
//! Transposes, mask Casts/Unsqueezes) and splicing them into the graph in topological order.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto};

use super::tensor::{dt, make_i64};
use super::{Fusion, Layout, MaskSrc, SeqlensSrc, Src};

struct Namer {
    used: HashSet<String>,
}

impl Namer {
    fn fresh(&mut self, base: &str) -> String {
        let mut k = 0;
        loop {
            let n = if k == 0 { base.to_string() } else { format!("{base}_{k}") };
            if self.used.insert(n.clone()) {
                return n;
            }
            k += 1;
        }
    }
}

pub(super) fn a_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}
pub(super) fn a_float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}
fn a_str(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec();
    a
}
fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

pub(super) fn node(op: &str, domain: &str, name: String, inputs: Vec<String>, outputs: Vec<String>, attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.domain = domain.into();
    n.name = name;
    n.input = inputs;
    n.output = outputs;
    n.attribute = attrs;
    n
}

/// Helper nodes are shared between fusions (one key-padding mask for all layers).
struct Builder<'a> {
    namer: Namer,
    cache: HashMap<String, String>,
    opset: i64,
    inits: &'a mut Vec<onnx_protobuf::TensorProto>,
}

impl Builder<'_> {
    fn helper(&mut self, key: String, out: &mut Vec<NodeProto>, make: impl FnOnce(&mut Self, String) -> Vec<NodeProto>) -> String {
        if let Some(t) = self.cache.get(&key) {
            return t.clone();
        }
        let base = format!("flashattn/{}", key.replace(['/', ':'], "_"));
        let name = self.namer.fresh(&base);
        let nodes = make(self, name.clone());
        out.extend(nodes);
        self.cache.insert(key, name.clone());
        name
    }

    fn unsqueeze(&mut self, x: String, axes: &[i64], y: String) -> Vec<NodeProto> {
        let nm = self.namer.fresh(&format!("{y}/Unsqueeze"));
        if self.opset >= 13 {
            let key = format!("axes{axes:?}");
            let c = match self.cache.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = self.namer.fresh(&format!("flashattn/axes_{}", axes.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("_")));
                    self.inits.push(make_i64(&c, &[axes.len() as i64], axes));
                    self.cache.insert(key, c.clone());
                    c
                }
            };
            vec![node("Unsqueeze", "", nm, vec![x, c], vec![y], vec![])]
        } else {
            vec![node("Unsqueeze", "", nm, vec![x], vec![y], vec![a_ints("axes", axes)])]
        }
    }

    fn src(&mut self, s: &Src, out: &mut Vec<NodeProto>) -> String {
        match s {
            Src::Tensor(t) => t.clone(),
            Src::Transposed(t, perm) => self.helper(format!("{t}/T{perm:?}"), out, |_b, y| {
                vec![node("Transpose", "", format!("{y}/Transpose"), vec![t.clone()], vec![y], vec![a_ints("perm", perm)])]
            }),
        }
    }

    fn mask(&mut self, m: &MaskSrc, out: &mut Vec<NodeProto>) -> String {
        match m {
            MaskSrc::Tensor(t) => t.clone(),
            MaskSrc::ToRank4(t, pad) => {
                let axes: Vec<i64> = (0..*pad as i64).collect();
                self.helper(format!("{t}/rank4"), out, |b, y| b.unsqueeze(t.clone(), &axes, y))
            }
            MaskSrc::Not(t, pad) => {
                let axes: Vec<i64> = (0..*pad as i64).collect();
                self.helper(format!("{t}/not"), out, |b, y| {
                    let nt = if axes.is_empty() { y.clone() } else { b.namer.fresh(&format!("{y}/not")) };
                    let mut v = vec![node("Not", "", b.namer.fresh(&format!("{y}/Not")), vec![t.clone()], vec![nt.clone()], vec![])];
                    if !axes.is_empty() {
                        v.extend(b.unsqueeze(nt, &axes, y));
                    }
                    v
                })
            }
            MaskSrc::Sum(ts, pad) => self.helper(format!("{}/sum", ts.join("+")), out, |b, y| {
                let mut v = vec![];
                let mut acc = ts[0].clone();
                for (i, t) in ts.iter().enumerate().skip(1) {
                    let o = b.namer.fresh(&format!("{y}/sum{i}"));
                    v.push(node("Add", "", b.namer.fresh(&format!("{y}/Add{i}")), vec![acc, t.clone()], vec![o.clone()], vec![]));
                    acc = o;
                }
                if *pad > 0 {
                    let axes: Vec<i64> = (0..*pad as i64).collect();
                    v.extend(b.unsqueeze(acc, &axes, y));
                } else {
                    v.push(node("Identity", "", b.namer.fresh(&format!("{y}/Identity")), vec![acc], vec![y], vec![]));
                }
                v
            }),
            MaskSrc::KeyPadding(t) => self.helper(format!("{t}/key_padding"), out, |b, y| {
                let c = b.namer.fresh(&format!("{y}/bool"));
                let mut v = vec![node("Cast", "", b.namer.fresh(&format!("{y}/Cast")), vec![t.clone()], vec![c.clone()], vec![a_int("to", dt::BOOL as i64)])];
                v.extend(b.unsqueeze(c, &[1, 2], y));
                v
            }),
        }
    }

    fn seqlens(&mut self, s: &SeqlensSrc, out: &mut Vec<NodeProto>) -> String {
        match s {
            SeqlensSrc::Lengths(t) => self.helper(format!("{t}/seqlens"), out, |b, y| {
                vec![node("Cast", "", b.namer.fresh(&format!("{y}/Cast")), vec![t.clone()], vec![y], vec![a_int("to", dt::INT32 as i64)])]
            }),
            SeqlensSrc::LengthsMinusOne(t) => self.helper(format!("{t}/seqlens_plus1"), out, |b, y| {
                let c = b.namer.fresh(&format!("{y}/i32"));
                let one = b.namer.fresh(&format!("{y}/one"));
                let mut t1 = onnx_protobuf::TensorProto::new();
                t1.name = one.clone();
                t1.data_type = dt::INT32;
                t1.int32_data = vec![1];
                b.inits.push(t1);
                vec![
                    node("Cast", "", b.namer.fresh(&format!("{y}/Cast")), vec![t.clone()], vec![c.clone()], vec![a_int("to", dt::INT32 as i64)]),
                    node("Add", "", b.namer.fresh(&format!("{y}/Add")), vec![c, one], vec![y], vec![]),
                ]
            }),
        }
    }
}

impl Builder<'_> {
    fn const_i32(&mut self, base: &str, v: i32) -> String {
        let key = format!("const_i32_{v}");
        if let Some(c) = self.cache.get(&key) {
            return c.clone();
        }
        let name = self.namer.fresh(&format!("flashattn/{base}"));
        let mut t = onnx_protobuf::TensorProto::new();
        t.name = name.clone();
        t.data_type = dt::INT32;
        t.int32_data = vec![v];
        self.inits.push(t);
        self.cache.insert(key, name.clone());
        name
    }

    /// past_seqlens = max(seqlens_k + 1 − new, 0), new = query's axis 1 (GroupQueryAttention's past lengths:
    /// 0 on the first prompt, total − new afterwards).
    fn past_lens(&mut self, seqlens_k: &str, query: &str, out: &mut Vec<NodeProto>) -> String {
        let one = self.const_i32("one", 1);
        let zero = self.const_i32("zero", 0);
        let axis1 = match self.cache.get("const_i64_1") {
            Some(c) => c.clone(),
            None => {
                let c = self.namer.fresh("flashattn/axis1");
                self.inits.push(make_i64(&c, &[], &[1]));
                self.cache.insert("const_i64_1".into(), c.clone());
                c
            }
        };
        self.helper(format!("{seqlens_k}/{query}/past_lens"), out, |b, y| {
            let f = |b: &mut Self, s: &str| b.namer.fresh(&format!("{y}/{s}"));
            let (shape, new, new32, sk, total, diff) = (f(b, "shape"), f(b, "new"), f(b, "new_i32"), f(b, "seqlens_k_i32"), f(b, "total"), f(b, "diff"));
            vec![
                node("Shape", "", f(b, "Shape"), vec![query.to_string()], vec![shape.clone()], vec![]),
                node("Gather", "", f(b, "Gather"), vec![shape, axis1], vec![new.clone()], vec![a_int("axis", 0)]),
                node("Cast", "", f(b, "CastNew"), vec![new], vec![new32.clone()], vec![a_int("to", dt::INT32 as i64)]),
                node("Cast", "", f(b, "CastSeqlens"), vec![seqlens_k.to_string()], vec![sk.clone()], vec![a_int("to", dt::INT32 as i64)]),
                node("Add", "", f(b, "Add"), vec![sk, one], vec![total.clone()], vec![]),
                node("Sub", "", f(b, "Sub"), vec![total, new32], vec![diff.clone()], vec![]),
                node("Max", "", f(b, "Max"), vec![diff, zero], vec![y], vec![]),
            ]
        })
    }
}

/// Replaces each fusion's `replaces` node by the fused node (plus helpers placed just before it).
pub fn apply(g: &mut GraphProto, fusions: &[Fusion], opset: i64) -> Result<()> {
    let mut used: HashSet<String> = g.node.iter().flat_map(|n| n.output.iter().cloned().chain([n.name.clone()])).collect();
    used.extend(g.initializer.iter().map(|t| t.name.clone()));
    used.extend(g.input.iter().map(|t| t.name.clone()));
    used.extend(g.value_info.iter().map(|t| t.name.clone()));
    let by_node: HashMap<usize, &Fusion> = fusions.iter().map(|f| (f.replaces, f)).collect();
    let mut inits = Vec::new();
    let mut b = Builder { namer: Namer { used }, cache: HashMap::new(), opset, inits: &mut inits };
    let old = std::mem::take(&mut g.node);
    let mut nodes = Vec::with_capacity(old.len());
    let dropped: HashSet<usize> = fusions.iter().filter_map(|f| f.kv.as_ref()).flat_map(|kv| kv.drop.iter().copied()).collect();
    for (i, n) in old.into_iter().enumerate() {
        if dropped.contains(&i) {
            continue; // the fused node produces its outputs (present) now
        }
        let Some(f) = by_node.get(&i) else {
            nodes.push(n);
            continue;
        };
        nodes.extend(f.prelude.iter().cloned());
        b.inits.extend(f.prelude_inits.iter().cloned());
        let q = b.src(&f.q, &mut nodes);
        let k = b.src(&f.k, &mut nodes);
        let v = b.src(&f.v, &mut nodes);
        let mask = f.attn_mask.as_ref().map(|m| b.mask(m, &mut nodes)).unwrap_or_default();
        let lens = f.key_seqlens.as_ref().map(|s| b.seqlens(s, &mut nodes)).unwrap_or_default();
        let mut inputs = vec![q, k, v, mask, lens];
        let mut outputs = vec![f.output.clone()];
        if let Some(kv) = &f.kv {
            let lens = kv.past_lens_from.as_ref().map(|(sk, q)| b.past_lens(sk, q, &mut nodes)).unwrap_or_default();
            let opt = |x: &Option<String>| x.clone().unwrap_or_default();
            inputs.extend([kv.past_key.clone(), kv.past_value.clone(), lens, opt(&kv.cos_cache), opt(&kv.sin_cache), opt(&kv.position_ids)]);
            outputs.extend([String::new(), kv.present_key.clone(), kv.present_value.clone()]);
        }
        while inputs.last().is_some_and(|s| s.is_empty()) {
            inputs.pop();
        }
        let mut attrs = vec![];
        match f.layout {
            Layout::Bsnh => attrs.push(a_str("layout", "BSNH")),
            Layout::Bnsh => attrs.push(a_str("layout", "BNSH")),
            Layout::ThreeD(h) => attrs.push(a_int("num_heads", h)),
        }
        if f.causal {
            attrs.push(a_int("causal", 1));
        }
        if let Some(s) = f.scale {
            attrs.push(a_float("scale", s as f32));
        }
        if f.softcap != 0.0 {
            attrs.push(a_float("softcap", f.softcap as f32));
        }
        if f.window_left >= 0 {
            attrs.push(a_int("window_left", f.window_left));
        }
        if f.window_right >= 0 && !(f.causal && f.window_right == 0) {
            attrs.push(a_int("window_right", f.window_right));
        }
        if f.kv.as_ref().is_some_and(|kv| kv.rotary_interleaved) {
            attrs.push(a_int("rotary_interleaved", 1));
        }
        let name = b.namer.fresh(&format!("{}/FlashAttention", if n.name.is_empty() { &f.output } else { &n.name }));
        match f.out_cast {
            None => nodes.push(node("FlashAttention", crate::DOMAIN, name, inputs, outputs, attrs)),
            Some(t) => {
                let tmp = b.namer.fresh(&format!("{}/flashattn", f.output));
                outputs[0] = tmp.clone();
                nodes.push(node("FlashAttention", crate::DOMAIN, name.clone(), inputs, outputs, attrs));
                nodes.push(node("Cast", "", b.namer.fresh(&format!("{name}/Cast")), vec![tmp], vec![f.output.clone()], vec![a_int("to", t as i64)]));
            }
        }
    }
    g.node = nodes;
    g.initializer.extend(inits);
    Ok(())
}
