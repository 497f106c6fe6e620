//! A small evaluator over the graph for *probing*: given concrete sizes for the graph inputs' symbolic
//! dimensions (and concrete values for their integer/bool inputs), it computes
//! - the value of small tensors built from shapes, constants and integer inputs (masks, scales, shape
//!   tensors), and
//! - the shape of any tensor whose shape follows from the rules below (hidden states included), without
//!   computing its value.
//!
//! Anything it cannot do yields `None`, and callers then treat the piece as unrecognized. It never
//! evaluates float graph inputs nor MatMul/Conv values, so the cost stays tiny even on large models.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use onnx_protobuf::TensorProto;

use super::graph::{attr, attr_i, attr_ints, is_onnx_domain, opt_input, Dim, GraphIndex};
use super::tensor::{decode, dt, Tensor};

/// Largest tensor the evaluator materializes.
const MAX_ELEMS: usize = 1 << 23;

/// Concrete sizes and integer input values for one evaluation.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The size given to a symbolic/unknown dimension, by axis position in the graph input.
    pub axis_dims: Vec<i64>,
    /// Values of integer/bool graph inputs.
    pub values: HashMap<String, Tensor>,
}

pub type ExternalReader<'r> = &'r dyn Fn(&TensorProto) -> Option<Vec<u8>>;

pub struct Evaluator<'g, 'a> {
    gi: &'g GraphIndex<'a>,
    probe: Probe,
    ext: ExternalReader<'g>,
    vals: RefCell<HashMap<String, Option<Rc<Tensor>>>>,
    shapes: RefCell<HashMap<String, Option<Vec<i64>>>>,
}

impl<'g, 'a> Evaluator<'g, 'a> {
    pub fn new(gi: &'g GraphIndex<'a>, probe: Probe, ext: ExternalReader<'g>) -> Self {
        Evaluator { gi, probe, ext, vals: RefCell::default(), shapes: RefCell::default() }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Concrete shape of a graph input under this probe.
    pub fn input_shape(&self, name: &str) -> Option<Vec<i64>> {
        let decl = self.gi.declared_shape(name)?;
        Some(
            decl.iter()
                .enumerate()
                .map(|(k, d)| match d {
                    Dim::Known(v) => *v,
                    _ => *self.probe.axis_dims.get(k).unwrap_or(&3),
                })
                .collect(),
        )
    }

    pub fn value(&self, t: &str) -> Option<Rc<Tensor>> {
        if t.is_empty() {
            return None;
        }
        if let Some(v) = self.vals.borrow().get(t) {
            return v.clone();
        }
        // Mark as in progress (cycles cannot occur in a valid graph, but be safe).
        self.vals.borrow_mut().insert(t.to_string(), None);
        let v = self.compute_value(t).filter(|v| v.numel() <= MAX_ELEMS).map(Rc::new);
        self.vals.borrow_mut().insert(t.to_string(), v.clone());
        v
    }

    pub fn shape(&self, t: &str) -> Option<Vec<i64>> {
        if let Some(s) = self.shapes.borrow().get(t) {
            return s.clone();
        }
        self.shapes.borrow_mut().insert(t.to_string(), None);
        let s = self.compute_shape(t);
        self.shapes.borrow_mut().insert(t.to_string(), s.clone());
        s
    }

    /// A one-element value as f64.
    pub fn scalar(&self, t: &str) -> Option<f64> {
        self.value(t)?.single()
    }

    fn compute_value(&self, t: &str) -> Option<Tensor> {
        if let Some(init) = self.gi.inits.get(t) {
            if let Some(v) = self.probe.values.get(t) {
                return Some(v.clone());
            }
            let n: i64 = init.dims.iter().product();
            if n as usize > MAX_ELEMS {
                return None;
            }
            return decode(init, self.ext).ok();
        }
        if self.gi.inputs.contains_key(t) {
            return self.probe.values.get(t).cloned();
        }
        let (_, n) = self.gi.prod(t)?;
        if !is_onnx_domain(&n.domain) {
            return None;
        }
        let out_idx = n.output.iter().position(|o| o == t)?;
        let inp = |i: usize| -> Option<Rc<Tensor>> { self.value(n.input.get(i)?) };
        let op = n.op_type.as_str();
        let r = match op {
            "Constant" => {
                let a = n.attribute.first()?;
                match a.name.as_str() {
                    "value" => decode(a.t.as_ref()?, self.ext).ok()?,
                    "value_float" => Tensor::scalar(dt::FLOAT, a.f as f64),
                    "value_floats" => Tensor::new(dt::FLOAT, vec![a.floats.len()], a.floats.iter().map(|&x| x as f64).collect()),
                    "value_int" => Tensor::scalar(dt::INT64, a.i as f64),
                    "value_ints" => Tensor::vec_i64(&a.ints),
                    _ => return None,
                }
            }
            "Identity" => (*inp(0)?).clone(),
            "Shape" => {
                let s = self.shape(&n.input[0])?;
                let r = s.len() as i64;
                let norm = |v: i64| if v < 0 { (v + r).clamp(0, r) } else { v.clamp(0, r) };
                let st = norm(attr_i(n, "start").unwrap_or(0));
                let en = norm(attr_i(n, "end").unwrap_or(r));
                Tensor::vec_i64(&s[st as usize..(en.max(st)) as usize])
            }
            "Size" => Tensor::scalar(dt::INT64, self.shape(&n.input[0])?.iter().product::<i64>() as f64),
            "Cast" => {
                let to = attr_i(n, "to")? as i32;
                let x = inp(0)?;
                Tensor::new(to, x.shape.clone(), x.data.clone()).normalize()
            }
            "CastLike" => {
                let x = inp(0)?;
                let to = self.value(&n.input[1]).map(|v| v.dtype).or_else(|| self.gi.elem_type(&n.input[1]))?;
                Tensor::new(to, x.shape.clone(), x.data.clone()).normalize()
            }
            "Neg" => map1(&*inp(0)?, |x| -x),
            "Abs" => map1(&*inp(0)?, f64::abs),
            "Sqrt" => map1(&*inp(0)?, f64::sqrt),
            "Reciprocal" => map1(&*inp(0)?, |x| 1.0 / x),
            "Floor" => map1(&*inp(0)?, f64::floor),
            "Ceil" => map1(&*inp(0)?, f64::ceil),
            "Exp" => map1(&*inp(0)?, f64::exp),
            "Log" => map1(&*inp(0)?, f64::ln),
            "Not" => map1(&*inp(0)?, |x| (x == 0.0) as i32 as f64),
            "IsInf" => {
                let x = inp(0)?;
                let pos = attr_i(n, "detect_positive").unwrap_or(1) != 0;
                let neg = attr_i(n, "detect_negative").unwrap_or(1) != 0;
                let mut r = map1(&x, |v| ((v == f64::INFINITY && pos) || (v == f64::NEG_INFINITY && neg)) as i32 as f64);
                r.dtype = dt::BOOL;
                r
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" | "Equal" | "Less" | "LessOrEqual"
            | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor" | "BitwiseAnd" | "BitwiseOr" => {
                if (op == "Max" || op == "Min") && n.input.len() != 2 {
                    return None;
                }
                let a = inp(0)?;
                let b = inp(1)?;
                binary(op, &a, &b)?
            }
            "Where" => {
                let c = inp(0)?;
                let a = inp(1)?;
                let b = inp(2)?;
                let shape = broadcast(&broadcast(&c.shape, &a.shape)?, &b.shape)?;
                let (ci, ai, bi) = (bidx(&c.shape, &shape), bidx(&a.shape, &shape), bidx(&b.shape, &shape));
                let data = (0..ci.len()).map(|k| if c.data[ci[k]] != 0.0 { a.data[ai[k]] } else { b.data[bi[k]] }).collect();
                Tensor::new(a.dtype, shape, data)
            }
            "Range" => {
                let (s, l, d) = (inp(0)?, inp(1)?, inp(2)?);
                let (s, l, d) = (s.single()?, l.single()?, d.single()?);
                if d == 0.0 {
                    return None;
                }
                let cnt = ((l - s) / d).ceil().max(0.0) as usize;
                if cnt > MAX_ELEMS {
                    return None;
                }
                let dtype = inp(0)?.dtype;
                Tensor::new(dtype, vec![cnt], (0..cnt).map(|i| s + i as f64 * d).collect())
            }
            "ConstantOfShape" => {
                let s = inp(0)?.as_i64();
                let (dtype, v) = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => {
                        let d = decode(t, self.ext).ok()?;
                        (d.dtype, d.data.first().copied().unwrap_or(0.0))
                    }
                    None => (dt::FLOAT, 0.0),
                };
                let shape: Vec<usize> = s.iter().map(|&x| x.max(0) as usize).collect();
                let numel: usize = shape.iter().product();
                if numel > MAX_ELEMS {
                    return None;
                }
                Tensor::new(dtype, shape, vec![v; numel])
            }
            "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" | "Expand" | "Transpose" | "Concat" | "Gather" | "Slice"
            | "Tile" | "Trilu" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "CumSum" | "Split"
            | "Clip" | "GatherElements" | "GatherND" => self.shape_op_value(n, op, out_idx)?,
            _ => return None,
        };
        Some(r)
    }

    fn axes_of(&self, n: &onnx_protobuf::NodeProto, input: usize) -> Option<Vec<i64>> {
        if let Some(a) = attr_ints(n, "axes") {
            return Some(a);
        }
        match n.input.get(input) {
            Some(s) if !s.is_empty() => Some(self.value(s)?.as_i64()),
            _ => None,
        }
    }

    fn shape_op_value(&self, n: &onnx_protobuf::NodeProto, op: &str, out_idx: usize) -> Option<Tensor> {
        let x = self.value(&n.input[0])?;
        let out_shape = self.node_shape(n, out_idx)?;
        let oshape: Vec<usize> = out_shape.iter().map(|&d| d as usize).collect();
        let numel: usize = oshape.iter().product();
        if numel > MAX_ELEMS {
            return None;
        }
        let r = x.rank() as i64;
        let norm = |a: i64, r: i64| if a < 0 { a + r } else { a };
        Some(match op {
            "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => Tensor::new(x.dtype, oshape, x.data.clone()),
            "Expand" => {
                let idx = bidx(&x.shape, &oshape);
                Tensor::new(x.dtype, oshape, idx.iter().map(|&i| x.data[i]).collect())
            }
            "Tile" => {
                let st = strides(&x.shape);
                let mut data = Vec::with_capacity(numel);
                for_each_index(&oshape, |ix| {
                    let off: usize = ix.iter().enumerate().map(|(k, &i)| (i % x.shape[k]) * st[k]).sum();
                    data.push(x.data[off]);
                });
                Tensor::new(x.dtype, oshape, data)
            }
            "Transpose" => {
                let perm: Vec<usize> = attr_ints(n, "perm")
                    .map(|p| p.iter().map(|&v| v as usize).collect())
                    .unwrap_or_else(|| (0..x.rank()).rev().collect());
                let st = strides(&x.shape);
                let mut data = Vec::with_capacity(numel);
                for_each_index(&oshape, |ix| {
                    data.push(x.data[ix.iter().enumerate().map(|(k, &i)| i * st[perm[k]]).sum::<usize>()]);
                });
                Tensor::new(x.dtype, oshape, data)
            }
            "Concat" => {
                let axis = norm(attr_i(n, "axis")?, r) as usize;
                let parts: Vec<Rc<Tensor>> = n.input.iter().map(|i| self.value(i)).collect::<Option<_>>()?;
                let outer: usize = oshape[..axis].iter().product();
                let mut data = Vec::with_capacity(numel);
                for o in 0..outer {
                    for p in &parts {
                        let chunk: usize = p.shape[axis..].iter().product();
                        data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
                    }
                }
                Tensor::new(x.dtype, oshape, data)
            }
            "Gather" => {
                let axis = norm(attr_i(n, "axis").unwrap_or(0), r) as usize;
                let ind = self.value(&n.input[1])?;
                let outer: usize = x.shape[..axis].iter().product();
                let inner: usize = x.shape[axis + 1..].iter().product();
                let dim = x.shape[axis] as i64;
                let mut data = Vec::with_capacity(numel);
                for o in 0..outer {
                    for &iv in &ind.data {
                        let i = norm(iv as i64, dim);
                        if i < 0 || i >= dim {
                            return None;
                        }
                        let base = (o * dim as usize + i as usize) * inner;
                        data.extend_from_slice(&x.data[base..base + inner]);
                    }
                }
                Tensor::new(x.dtype, oshape, data)
            }
            "GatherElements" => return None,
            "GatherND" => {
                if attr_i(n, "batch_dims").unwrap_or(0) != 0 {
                    return None;
                }
                let ind = self.value(&n.input[1])?;
                let q = *ind.shape.last()?;
                if q > x.rank() {
                    return None;
                }
                let st = strides(&x.shape);
                let inner: usize = x.shape[q..].iter().product();
                let mut data = Vec::with_capacity(numel);
                for row in ind.data.chunks(q.max(1)) {
                    let mut off = 0usize;
                    for k in 0..q {
                        let d = x.shape[k] as i64;
                        let i = norm(row[k] as i64, d);
                        if i < 0 || i >= d {
                            return None;
                        }
                        off += i as usize * st[k];
                    }
                    data.extend_from_slice(&x.data[off..off + inner]);
                }
                Tensor::new(x.dtype, oshape, data)
            }
            "Slice" => {
                let (starts, _ends, axes, steps) = self.slice_params(n, &x.shape.iter().map(|&d| d as i64).collect::<Vec<_>>())?;
                let st = strides(&x.shape);
                let mut start = vec![0i64; x.rank()];
                let mut step = vec![1i64; x.rank()];
                for k in 0..axes.len() {
                    start[axes[k]] = starts[k];
                    step[axes[k]] = steps[k];
                }
                let mut data = Vec::with_capacity(numel);
                for_each_index(&oshape, |ix| {
                    let off: usize = ix.iter().enumerate().map(|(k, &i)| ((start[k] + i as i64 * step[k]) as usize) * st[k]).sum();
                    data.push(x.data[off]);
                });
                Tensor::new(x.dtype, oshape, data)
            }
            "Trilu" => {
                let upper = attr_i(n, "upper").unwrap_or(1) != 0;
                let k = match n.input.get(1) {
                    Some(s) if !s.is_empty() => self.scalar(s)? as i64,
                    _ => 0,
                };
                if x.rank() < 2 {
                    return None;
                }
                let (rows, cols) = (x.shape[x.rank() - 2], x.shape[x.rank() - 1]);
                let data = x
                    .data
                    .iter()
                    .enumerate()
                    .map(|(p, &v)| {
                        let (i, j) = (((p / cols) % rows) as i64, (p % cols) as i64);
                        let keep = if upper { j - i >= k } else { j - i <= k };
                        if keep { v } else { 0.0 }
                    })
                    .collect();
                Tensor::new(x.dtype, oshape, data)
            }
            "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" => {
                let ax_in = if self.gi.opset >= 18 || op == "ReduceSum" && self.gi.opset >= 13 { 1 } else { usize::MAX };
                let axes: Vec<usize> = match self.axes_of(n, ax_in) {
                    Some(a) if !a.is_empty() => a.iter().map(|&v| norm(v, r) as usize).collect(),
                    _ => {
                        if attr_i(n, "noop_with_empty_axes").unwrap_or(0) != 0 {
                            return Some(Tensor::new(x.dtype, oshape, x.data.clone()));
                        }
                        (0..x.rank()).collect()
                    }
                };
                let init = match op {
                    "ReduceSum" => 0.0,
                    "ReduceProd" => 1.0,
                    "ReduceMax" => f64::NEG_INFINITY,
                    _ => f64::INFINITY,
                };
                let kept: Vec<usize> = x.shape.iter().enumerate().map(|(k, &d)| if axes.contains(&k) { 1 } else { d }).collect();
                let kst = strides(&kept);
                let mut data = vec![init; numel];
                let mut p = 0;
                for_each_index(&x.shape, |ix| {
                    let o: usize = ix.iter().enumerate().map(|(k, &i)| if axes.contains(&k) { 0 } else { i * kst[k] }).sum();
                    let v = x.data[p];
                    data[o] = match op {
                        "ReduceSum" => data[o] + v,
                        "ReduceProd" => data[o] * v,
                        "ReduceMax" => data[o].max(v),
                        _ => data[o].min(v),
                    };
                    p += 1;
                });
                Tensor::new(x.dtype, oshape, data)
            }
            "CumSum" => {
                if attr_i(n, "exclusive").unwrap_or(0) != 0 || attr_i(n, "reverse").unwrap_or(0) != 0 {
                    return None;
                }
                let axis = norm(self.scalar(&n.input[1])? as i64, r) as usize;
                let st = strides(&x.shape);
                let mut data = x.data.clone();
                let mut p = 0;
                for_each_index(&x.shape, |ix| {
                    if ix[axis] > 0 {
                        data[p] += data[p - st[axis]];
                    }
                    p += 1;
                });
                Tensor::new(x.dtype, oshape, data)
            }
            "Clip" => {
                let lo = n.input.get(1).filter(|s| !s.is_empty()).map(|s| self.scalar(s)).unwrap_or(Some(f64::NEG_INFINITY))?;
                let hi = n.input.get(2).filter(|s| !s.is_empty()).map(|s| self.scalar(s)).unwrap_or(Some(f64::INFINITY))?;
                map1(&x, |v| v.clamp(lo, hi))
            }
            "Split" => {
                let axis = norm(attr_i(n, "axis").unwrap_or(0), r) as usize;
                let mut off = 0usize;
                for k in 0..out_idx {
                    off += self.node_shape(n, k)?[axis] as usize;
                }
                let st = strides(&x.shape);
                let mut data = Vec::with_capacity(numel);
                for_each_index(&oshape, |ix| {
                    let o: usize = ix.iter().enumerate().map(|(k, &i)| (if k == axis { i + off } else { i }) * st[k]).sum();
                    data.push(x.data[o]);
                });
                Tensor::new(x.dtype, oshape, data)
            }
            _ => return None,
        })
    }

    /// (starts, ends, axes, steps), clamped and normalized for a tensor of shape `dims`.
    fn slice_params(&self, n: &onnx_protobuf::NodeProto, dims: &[i64]) -> Option<(Vec<i64>, Vec<i64>, Vec<usize>, Vec<i64>)> {
        let r = dims.len() as i64;
        let get = |i: usize| -> Option<Option<Vec<i64>>> {
            match n.input.get(i) {
                Some(s) if !s.is_empty() => Some(Some(self.value(s)?.as_i64())),
                _ => Some(None),
            }
        };
        let (starts, ends, axes, steps) = if n.input.len() >= 3 {
            (get(1)??, get(2)??, get(3)?, get(4)?)
        } else {
            (attr_ints(n, "starts")?, attr_ints(n, "ends")?, attr_ints(n, "axes"), None)
        };
        let axes: Vec<usize> = axes
            .unwrap_or_else(|| (0..starts.len() as i64).collect())
            .iter()
            .map(|&a| (if a < 0 { a + r } else { a }) as usize)
            .collect();
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        let mut s_out = vec![];
        let mut e_out = vec![];
        for k in 0..axes.len() {
            let d = *dims.get(axes[k])?;
            let step = steps[k];
            if step == 0 {
                return None;
            }
            let clampi = |v: i64| -> i64 {
                let v = if v < 0 { v.saturating_add(d) } else { v };
                if step > 0 { v.clamp(0, d) } else { v.clamp(-1, d - 1) }
            };
            s_out.push(clampi(starts[k]));
            e_out.push(clampi(ends[k]));
        }
        Some((s_out, e_out, axes, steps))
    }

    /// Shape of output `k` of node `n` from its inputs' shapes (and the values of shape-like inputs).
    fn node_shape(&self, n: &onnx_protobuf::NodeProto, k: usize) -> Option<Vec<i64>> {
        let sh = |i: usize| -> Option<Vec<i64>> { self.shape(n.input.get(i).filter(|s| !s.is_empty())?) };
        let norm = |a: i64, r: usize| -> usize { (if a < 0 { a + r as i64 } else { a }) as usize };
        let op = n.op_type.as_str();
        // Attention-like ops: the query's shape with the value's head size.
        let attention_out = |heads: i64| -> Option<Vec<i64>> {
            let (q, v) = (sh(0)?, sh(2)?);
            match (q.len(), v.len()) {
                (4, 4) => Some(vec![q[0], q[1], q[2], v[3]]),
                (3, 3) if heads > 0 => {
                    let kvh = attr_i(n, "kv_num_heads").unwrap_or(heads);
                    Some(vec![q[0], q[1], heads * (v[2] / kvh.max(1))])
                }
                _ => None,
            }
        };
        match (n.domain.as_str(), op) {
            ("com.microsoft", "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" | "SimplifiedLayerNormalization"
            | "FastGelu" | "BiasGelu" | "Gelu" | "QuickGelu" | "RotaryEmbedding" | "BiasAdd")
                if k == 0 =>
            {
                return sh(0)
            }
            ("com.microsoft", "MultiHeadAttention" | "GroupQueryAttention") if k == 0 => {
                let q = sh(0)?;
                if op == "GroupQueryAttention" || opt_input(n, 2).is_none() {
                    return Some(q);
                }
                let v = sh(2)?;
                let h = attr_i(n, "num_heads")?;
                return match v.len() {
                    3 => Some(vec![q[0], q[1], v[2]]),
                    4 => Some(vec![q[0], q[1], h * v[3]]),
                    _ => None,
                };
            }
            (d, "FlashAttention") if d == crate::DOMAIN && k == 0 => {
                let q = sh(0)?;
                let v = sh(2)?;
                return match (q.len(), v.len()) {
                    (4, 4) => Some(vec![q[0], q[1], q[2], v[3]]),
                    (3, 3) => {
                        let h = attr_i(n, "num_heads")?;
                        let kvh = (sh(1)?[2] / (q[2] / h).max(1)).max(1);
                        Some(vec![q[0], q[1], h * (v[2] / kvh)])
                    }
                    _ => None,
                };
            }
            (d, "Attention") if is_onnx_domain(d) && k == 0 => return attention_out(attr_i(n, "q_num_heads").unwrap_or(0)),
            (d, "RotaryEmbedding") if is_onnx_domain(d) => return sh(0),
            (d, _) if !is_onnx_domain(d) => return None,
            _ => {}
        }
        Some(match op {
            "Identity" | "Cast" | "CastLike" | "Neg" | "Abs" | "Sqrt" | "Reciprocal" | "Floor" | "Ceil" | "Exp" | "Log"
            | "Not" | "IsInf" | "IsNaN" | "Relu" | "Gelu" | "Erf" | "Tanh" | "Sigmoid" | "Softmax" | "LogSoftmax" | "Sin"
            | "Cos" | "Trilu" | "CumSum" | "Clip" | "HardSigmoid" | "LeakyRelu" | "Elu" | "Softplus" | "Mish" => sh(0)?,
            "Dropout" | "LayerNormalization" | "RMSNormalization" | "BatchNormalization" | "InstanceNormalization"
            | "GroupNormalization"
                if k == 0 =>
            {
                sh(0)?
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" | "Equal" | "Less" | "LessOrEqual" | "Greater"
            | "GreaterOrEqual" | "And" | "Or" | "Xor" | "Where" | "BitwiseAnd" | "BitwiseOr" | "Sum" | "Mean" => {
                let mut s: Vec<usize> = vec![];
                for i in 0..n.input.len() {
                    let x: Vec<usize> = sh(i)?.iter().map(|&d| d as usize).collect();
                    s = broadcast(&s, &x)?;
                }
                s.iter().map(|&d| d as i64).collect()
            }
            "MatMul" => {
                let (a, b) = (sh(0)?, sh(1)?);
                if a.is_empty() || b.is_empty() {
                    return None;
                }
                let a2 = if a.len() == 1 { vec![1, a[0]] } else { a.clone() };
                let b2 = if b.len() == 1 { vec![b[0], 1] } else { b.clone() };
                let ba: Vec<usize> = a2[..a2.len() - 2].iter().map(|&d| d as usize).collect();
                let bb: Vec<usize> = b2[..b2.len() - 2].iter().map(|&d| d as usize).collect();
                let mut s: Vec<i64> = broadcast(&ba, &bb)?.iter().map(|&d| d as i64).collect();
                if a.len() > 1 {
                    s.push(a2[a2.len() - 2]);
                }
                if b.len() > 1 {
                    s.push(b2[b2.len() - 1]);
                }
                s
            }
            "Gemm" => {
                let (a, b) = (sh(0)?, sh(1)?);
                let m = if attr_i(n, "transA").unwrap_or(0) != 0 { a[1] } else { a[0] };
                let nn = if attr_i(n, "transB").unwrap_or(0) != 0 { b[0] } else { b[1] };
                vec![m, nn]
            }
            "Transpose" => {
                let x = sh(0)?;
                match attr_ints(n, "perm") {
                    Some(p) => p.iter().map(|&i| x.get(i as usize).copied()).collect::<Option<_>>()?,
                    None => x.iter().rev().copied().collect(),
                }
            }
            "Reshape" => {
                let x = sh(0)?;
                let t = self.value(&n.input[1])?.as_i64();
                let allowzero = attr_i(n, "allowzero").unwrap_or(0) != 0;
                let mut out: Vec<i64> = t
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if d == 0 && !allowzero { x.get(i).copied().unwrap_or(0) } else { d })
                    .collect();
                let total: i64 = x.iter().product();
                if let Some(p) = out.iter().position(|&d| d == -1) {
                    let known: i64 = out.iter().filter(|&&d| d != -1).product();
                    if known == 0 {
                        return None;
                    }
                    out[p] = total / known;
                }
                if out.iter().product::<i64>() != total {
                    return None;
                }
                out
            }
            "Flatten" => {
                let x = sh(0)?;
                let a = norm(attr_i(n, "axis").unwrap_or(1), x.len());
                vec![x[..a].iter().product(), x[a..].iter().product()]
            }
            "Unsqueeze" => {
                let x = sh(0)?;
                let r = x.len() + self.axes_of(n, 1)?.len();
                let mut axes: Vec<usize> = self.axes_of(n, 1)?.iter().map(|&a| norm(a, r)).collect();
                axes.sort();
                let mut out = x.clone();
                for a in axes {
                    if a > out.len() {
                        return None;
                    }
                    out.insert(a, 1);
                }
                out
            }
            "Squeeze" => {
                let x = sh(0)?;
                match self.axes_of(n, 1) {
                    Some(a) => {
                        let axes: Vec<usize> = a.iter().map(|&v| norm(v, x.len())).collect();
                        x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
                    }
                    None => x.iter().copied().filter(|&d| d != 1).collect(),
                }
            }
            "Expand" => {
                let x: Vec<usize> = sh(0)?.iter().map(|&d| d as usize).collect();
                let t: Vec<usize> = self.value(&n.input[1])?.as_i64().iter().map(|&d| d.max(0) as usize).collect();
                broadcast(&x, &t)?.iter().map(|&d| d as i64).collect()
            }
            "Tile" => {
                let x = sh(0)?;
                let rep = self.value(&n.input[1])?.as_i64();
                x.iter().zip(rep.iter()).map(|(a, b)| a * b).collect()
            }
            "Concat" => {
                let mut out = sh(0)?;
                let a = norm(attr_i(n, "axis")?, out.len());
                for i in 1..n.input.len() {
                    out[a] += sh(i)?[a];
                }
                out
            }
            "Gather" => {
                let x = sh(0)?;
                let ind = sh(1)?;
                let a = norm(attr_i(n, "axis").unwrap_or(0), x.len());
                let mut out = x[..a].to_vec();
                out.extend(ind);
                out.extend_from_slice(&x[a + 1..]);
                out
            }
            "GatherElements" => sh(1)?,
            "GatherND" if attr_i(n, "batch_dims").unwrap_or(0) == 0 => {
                let x = sh(0)?;
                let ind = sh(1)?;
                let q = *ind.last()? as usize;
                let mut out = ind[..ind.len() - 1].to_vec();
                out.extend_from_slice(x.get(q..)?);
                out
            }
            "Slice" => {
                let x = sh(0)?;
                let (s, e, axes, steps) = self.slice_params(n, &x)?;
                let mut out = x.clone();
                for k in 0..axes.len() {
                    let st = steps[k];
                    let len = if st > 0 { (e[k] - s[k] + st - 1) / st } else { (s[k] - e[k] - st - 1) / -st };
                    out[axes[k]] = len.max(0);
                }
                out
            }
            "Split" => {
                let x = sh(0)?;
                let a = norm(attr_i(n, "axis").unwrap_or(0), x.len());
                let split = match attr_ints(n, "split") {
                    Some(s) => Some(s),
                    None => match n.input.get(1) {
                        Some(s) if !s.is_empty() => Some(self.value(s)?.as_i64()),
                        _ => None,
                    },
                };
                let mut out = x.clone();
                out[a] = match split {
                    Some(s) => *s.get(k)?,
                    None => {
                        let parts = n.output.len() as i64;
                        let chunk = (x[a] + parts - 1) / parts;
                        if k as i64 == parts - 1 { x[a] - chunk * (parts - 1) } else { chunk }
                    }
                };
                out
            }
            "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceMean" | "ReduceL2" | "ArgMax" | "ArgMin" => {
                let x = sh(0)?;
                let keep = attr_i(n, "keepdims").unwrap_or(1) != 0;
                let axes: Vec<usize> = if op.starts_with("Arg") {
                    vec![norm(attr_i(n, "axis").unwrap_or(0), x.len())]
                } else {
                    match self.axes_of(n, 1) {
                        Some(a) if !a.is_empty() => a.iter().map(|&v| norm(v, x.len())).collect(),
                        _ => (0..x.len()).collect(),
                    }
                };
                x.iter()
                    .enumerate()
                    .filter_map(|(i, &d)| if axes.contains(&i) { keep.then_some(1) } else { Some(d) })
                    .collect()
            }
            "Shape" => {
                let r = sh(0)?.len() as i64;
                let cl = |v: i64| if v < 0 { (v + r).clamp(0, r) } else { v.clamp(0, r) };
                let st = cl(attr_i(n, "start").unwrap_or(0));
                let en = cl(attr_i(n, "end").unwrap_or(r));
                vec![(en - st).max(0)]
            }
            "Size" => vec![],
            "ConstantOfShape" => self.value(&n.input[0])?.as_i64(),
            "Conv" => {
                let x = sh(0)?;
                let w = sh(1)?;
                let sp = x.len() - 2;
                let strides = attr_ints(n, "strides").unwrap_or(vec![1; sp]);
                let dil = attr_ints(n, "dilations").unwrap_or(vec![1; sp]);
                let pads = attr_ints(n, "pads").unwrap_or(vec![0; 2 * sp]);
                if attr(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
                    return None;
                }
                let mut out = vec![x[0], w[0]];
                for i in 0..sp {
                    let k = (w[2 + i] - 1) * dil[i] + 1;
                    out.push((x[2 + i] + pads[i] + pads[i + sp] - k) / strides[i] + 1);
                }
                out
            }
            _ => return None,
        })
    }

    fn compute_shape(&self, t: &str) -> Option<Vec<i64>> {
        if let Some(init) = self.gi.inits.get(t) {
            if let Some(v) = self.probe.values.get(t) {
                return Some(v.shape.iter().map(|&d| d as i64).collect());
            }
            return Some(init.dims.clone());
        }
        if self.gi.inputs.contains_key(t) {
            if let Some(v) = self.probe.values.get(t) {
                return Some(v.shape.iter().map(|&d| d as i64).collect());
            }
            return self.input_shape(t);
        }
        let (_, n) = self.gi.prod(t)?;
        let k = n.output.iter().position(|o| o == t)?;
        if n.op_type == "Constant" || n.op_type == "Range" {
            return self.value(t).map(|v| v.shape.iter().map(|&d| d as i64).collect());
        }
        if let Some(s) = self.node_shape(n, k) {
            return Some(s);
        }
        // Declared shapes help only where they are fully static.
        let decl = self.gi.declared_shape(t)?;
        decl.iter().map(|d| if let Dim::Known(v) = d { Some(*v) } else { None }).collect()
    }
}

fn map1(x: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    Tensor::new(x.dtype, x.shape.clone(), x.data.iter().map(|&v| f(v)).collect()).normalize()
}

pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let x = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let y = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n: usize = shape.iter().product();
    let mut ix = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&ix);
        for d in (0..shape.len()).rev() {
            ix[d] += 1;
            if ix[d] < shape[d] {
                break;
            }
            ix[d] = 0;
        }
    }
}

/// For each element of `out` (row-major), the flat index into a tensor of shape `src` broadcast to it.
pub fn bidx(src: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(src);
    let off = out.len() - src.len();
    let mut v = Vec::with_capacity(out.iter().product());
    for_each_index(out, |ix| {
        v.push((0..src.len()).map(|k| if src[k] == 1 { 0 } else { ix[k + off] * st[k] }).sum());
    });
    v
}

fn binary(op: &str, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let shape = broadcast(&a.shape, &b.shape)?;
    if shape.iter().product::<usize>() > MAX_ELEMS {
        return None;
    }
    let (ai, bi) = (bidx(&a.shape, &shape), bidx(&b.shape, &shape));
    let int = !dt::is_float(a.dtype);
    let cmp = matches!(op, "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual");
    let data = ai
        .iter()
        .zip(bi.iter())
        .map(|(&i, &j)| {
            let (x, y) = (a.data[i], b.data[j]);
            let b2f = |c: bool| c as i32 as f64;
            match op {
                "Add" => x + y,
                "Sub" => x - y,
                "Mul" => x * y,
                "Div" if int => {
                    if y == 0.0 { 0.0 } else { (x / y).trunc() }
                }
                "Div" => x / y,
                "Pow" => x.powf(y),
                "Max" => x.max(y),
                "Min" => x.min(y),
                "Mod" => x.rem_euclid(y),
                "Equal" => b2f(x == y),
                "Less" => b2f(x < y),
                "LessOrEqual" => b2f(x <= y),
                "Greater" => b2f(x > y),
                "GreaterOrEqual" => b2f(x >= y),
                "And" => b2f(x != 0.0 && y != 0.0),
                "Or" => b2f(x != 0.0 || y != 0.0),
                "Xor" => b2f((x != 0.0) != (y != 0.0)),
                "BitwiseAnd" => ((x as i64) & (y as i64)) as f64,
                _ => ((x as i64) | (y as i64)) as f64,
            }
        })
        .collect();
    let dtype = if cmp || matches!(op, "And" | "Or" | "Xor") { dt::BOOL } else { a.dtype };
    Some(Tensor::new(dtype, shape, data).normalize())
}
