//! Def-use index over a GraphProto: who produces each tensor, who consumes it, which tensors are
//! initializers, graph inputs or outputs, and the declared (value_info) types.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{type_proto, AttributeProto, GraphProto, NodeProto, TensorProto, ValueInfoProto};

/// A declared dimension: a number, a symbol, or nothing known.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Known(i64),
    Sym(String),
    Unknown,
}

pub struct GraphIndex<'a> {
    pub g: &'a GraphProto,
    pub producer: HashMap<&'a str, usize>,
    pub consumers: HashMap<&'a str, Vec<usize>>,
    pub inits: HashMap<&'a str, &'a TensorProto>,
    pub inputs: HashMap<&'a str, &'a ValueInfoProto>,
    pub outputs: HashSet<&'a str>,
    pub infos: HashMap<&'a str, &'a ValueInfoProto>,
    /// The default-domain opset the model imports.
    pub opset: i64,
}

impl<'a> GraphIndex<'a> {
    pub fn new(g: &'a GraphProto, opset: i64) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            for o in &n.output {
                if !o.is_empty() {
                    producer.insert(o.as_str(), i);
                }
            }
            for x in &n.input {
                if !x.is_empty() {
                    let v = consumers.entry(x.as_str()).or_default();
                    if v.last() != Some(&i) {
                        v.push(i);
                    }
                }
            }
            // Tensors used inside subgraphs (If/Loop/Scan bodies) count as consumed by the node.
            for a in &n.attribute {
                for sg in a.g.iter().chain(a.graphs.iter()) {
                    for name in outer_refs(sg) {
                        let v = consumers.entry(name).or_default();
                        if v.last() != Some(&i) {
                            v.push(i);
                        }
                    }
                }
            }
        }
        let inits = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let inputs = g.input.iter().map(|v| (v.name.as_str(), v)).collect();
        let outputs = g.output.iter().map(|v| v.name.as_str()).collect();
        let infos = g.value_info.iter().chain(g.input.iter()).chain(g.output.iter()).map(|v| (v.name.as_str(), v)).collect();
        GraphIndex { g, producer, consumers, inits, inputs, outputs, infos, opset }
    }

    pub fn node(&self, i: usize) -> &'a NodeProto {
        &self.g.node[i]
    }

    /// The node producing `t`, if any (not for initializers and graph inputs).
    pub fn prod(&self, t: &str) -> Option<(usize, &'a NodeProto)> {
        self.producer.get(t).map(|&i| (i, &self.g.node[i]))
    }

    /// The producing node when it is a default-domain op of type `op`.
    pub fn prod_op(&self, t: &str, op: &str) -> Option<(usize, &'a NodeProto)> {
        self.prod(t).filter(|(_, n)| n.op_type == op && is_onnx_domain(&n.domain))
    }

    pub fn users(&self, t: &str) -> &[usize] {
        self.consumers.get(t).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Number of uses of `t`, graph outputs counting as one.
    pub fn use_count(&self, t: &str) -> usize {
        self.users(t).len() + self.outputs.contains(t) as usize
    }

    /// Element type declared for `t`, if any.
    pub fn elem_type(&self, t: &str) -> Option<i32> {
        if let Some(init) = self.inits.get(t) {
            return Some(init.data_type);
        }
        match self.infos.get(t)?.type_.value.as_ref()? {
            type_proto::Value::TensorType(tt) => Some(tt.elem_type),
            _ => None,
        }
    }

    /// Element type of `t`: declared, or followed through type-preserving ops (and Cast).
    pub fn elem_type_guess(&self, t: &str) -> Option<i32> {
        self.elem_type_guess_n(t, 64)
    }

    fn elem_type_guess_n(&self, t: &str, budget: usize) -> Option<i32> {
        let mut cur = t;
        for _ in 0..budget {
            if let Some(e) = self.elem_type(cur) {
                return Some(e);
            }
            let (_, n) = self.prod(cur)?;
            if !is_onnx_domain(&n.domain) {
                return None;
            }
            cur = match n.op_type.as_str() {
                "Cast" => return attr_i(n, "to").map(|v| v as i32),
                "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor" | "Not" | "IsNaN"
                | "IsInf" => return Some(super::tensor::dt::BOOL),
                "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" => return Some(super::tensor::dt::INT64),
                "CastLike" => n.input.get(1)?,
                "Where" => match self.elem_type_guess_n(n.input.get(1)?, budget / 2) {
                    Some(t) => return Some(t),
                    None => n.input.get(2)?,
                },
                "Constant" => return constant_elem_type(n),
                // Operands of one type: the first whose type is known.
                "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Sum" | "Mean" | "Concat" => {
                    return n.input.iter().filter(|s| !s.is_empty()).find_map(|s| self.elem_type_guess_n(s, budget / 2));
                }
                "ConstantOfShape" | "RandomNormal" | "RandomUniform" | "EyeLike" | "QuantizeLinear"
                | "DequantizeLinear" | "DynamicQuantizeLinear" | "TopK" | "Multinomial" => return None,
                // Every other op's first output has its first input's type.
                _ => n.input.first().filter(|s| !s.is_empty())?,
            };
        }
        None
    }

    /// Declared shape of `t` (value_info, graph input/output, or initializer dims).
    pub fn declared_shape(&self, t: &str) -> Option<Vec<Dim>> {
        if let Some(init) = self.inits.get(t) {
            return Some(init.dims.iter().map(|&d| Dim::Known(d)).collect());
        }
        value_info_shape(self.infos.get(t)?)
    }

    /// Whether `t` is an initializer that is not overridable by a graph input.
    pub fn is_const_init(&self, t: &str) -> bool {
        self.inits.contains_key(t) && !self.inputs.contains_key(t)
    }
}

/// Element type of a Constant node's value.
fn constant_elem_type(n: &NodeProto) -> Option<i32> {
    use super::tensor::dt;
    let a = n.attribute.iter().find(|a| a.name.starts_with("value"))?;
    match a.name.as_str() {
        "value" => a.t.as_ref().map(|t| t.data_type),
        "value_float" | "value_floats" => Some(dt::FLOAT),
        "value_int" | "value_ints" => Some(dt::INT64),
        _ => None,
    }
}

pub fn value_info_shape(v: &ValueInfoProto) -> Option<Vec<Dim>> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value;
    match v.type_.value.as_ref()? {
        type_proto::Value::TensorType(tt) => {
            let s = tt.shape.as_ref()?;
            Some(
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Value::DimValue(x)) => Dim::Known(*x),
                        Some(Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                        _ => Dim::Unknown,
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

pub fn is_onnx_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// Input `i` of `n` when present and not the empty "absent" name.
pub fn opt_input(n: &NodeProto, i: usize) -> Option<&String> {
    n.input.get(i).filter(|s| !s.is_empty())
}

pub fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

pub fn attr_i(n: &NodeProto, name: &str) -> Option<i64> {
    attr(n, name).map(|a| a.i)
}

pub fn attr_f(n: &NodeProto, name: &str) -> Option<f32> {
    attr(n, name).map(|a| a.f)
}

pub fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

pub fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// Names a subgraph reads from its enclosing scope (used but not defined inside it).
pub fn outer_refs(g: &GraphProto) -> Vec<&str> {
    let mut defined: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        defined.extend(n.output.iter().map(|s| s.as_str()));
    }
    let mut out = Vec::new();
    for n in &g.node {
        for i in &n.input {
            if !i.is_empty() && !defined.contains(i.as_str()) {
                out.push(i.as_str());
            }
        }
        for a in &n.attribute {
            for sg in a.g.iter().chain(a.graphs.iter()) {
                for r in outer_refs(sg) {
                    if !defined.contains(r) {
                        out.push(r);
                    }
                }
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name.as_str()) {
            out.push(o.name.as_str());
        }
    }
    out
}
