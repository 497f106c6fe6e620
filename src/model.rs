//! Building small ONNX models around one attention node (tests, the demo, the CPU benchmark).

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Tensor};
use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto};

use crate::params::DType;

/// One dimension of a graph input/output: fixed, or named (dynamic).
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

impl From<i64> for Dim {
    fn from(d: i64) -> Self {
        Dim::Fixed(d)
    }
}

impl From<&str> for Dim {
    fn from(d: &str) -> Self {
        Dim::Named(d.to_string())
    }
}

pub fn onnx_type(dtype: DType) -> DataType {
    match dtype {
        DType::F32 => DataType::FLOAT,
        DType::F16 => DataType::FLOAT16,
        DType::BF16 => DataType::BFLOAT16,
    }
}

pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(v) => dimension::Value::DimValue(*v),
                    Dim::Named(s) => dimension::Value::DimParam(s.clone()),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let ty = TypeProto {
        value: Some(type_proto::Value::TensorType(Tensor { elem_type: elem as i32, shape: Some(shape).into(), ..Default::default() })),
        ..Default::default()
    };
    ValueInfoProto { name: name.to_string(), type_: Some(ty).into(), ..Default::default() }
}

/// A node attribute.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
}

pub fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto { name: name.to_string(), ..Default::default() };
    match value {
        Attr::Int(i) => {
            a.i = *i;
            a.type_ = AttributeType::INT.into();
        }
        Attr::Float(f) => {
            a.f = *f;
            a.type_ = AttributeType::FLOAT.into();
        }
        Attr::Str(s) => {
            a.s = s.as_bytes().to_vec();
            a.type_ = AttributeType::STRING.into();
        }
    }
    a
}

pub fn node(op_type: &str, domain: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) -> NodeProto {
    NodeProto {
        op_type: op_type.to_string(),
        domain: domain.to_string(),
        name: format!("{op_type}_0"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs.iter().map(|(n, v)| attribute(n, v)).collect(),
        ..Default::default()
    }
}

/// A one-graph model: IR 8 (ORT ≥ 1.17 reads it), default opset 17 plus the given extra domains.
pub fn model(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>, extra_opsets: &[(&str, i64)]) -> ModelProto {
    let graph = GraphProto { name: "g".into(), node: nodes, input: inputs, output: outputs, ..Default::default() };
    let mut opsets = vec![OperatorSetIdProto { domain: String::new(), version: 17, ..Default::default() }];
    opsets.extend(extra_opsets.iter().map(|(d, v)| OperatorSetIdProto { domain: d.to_string(), version: *v, ..Default::default() }));
    ModelProto {
        ir_version: 8,
        producer_name: "flashattn-ort".into(),
        graph: Some(graph).into(),
        opset_import: opsets,
        ..Default::default()
    }
}

pub fn to_bytes(m: &ModelProto) -> Vec<u8> {
    m.write_to_bytes().expect("serialising an in-memory ModelProto cannot fail")
}

/// The inputs of a single `ai.flashattn::FlashAttention` node, by position; "" = absent.
pub struct FlashNode<'a> {
    pub inputs: Vec<(&'a str, DataType, Vec<Dim>)>,
    pub attrs: Vec<(&'a str, Attr)>,
    pub with_lse: bool,
}

/// A model with one FlashAttention node; output "output" (and "softmax_lse") with shapes left to
/// the op's shape inference.
pub fn flash_attention_model(spec: &FlashNode) -> ModelProto {
    let names: Vec<&str> = spec.inputs.iter().map(|(n, _, _)| *n).collect();
    let outputs: Vec<&str> = if spec.with_lse { vec!["output", "softmax_lse"] } else { vec!["output"] };
    let n = node(crate::OP_NAME, crate::DOMAIN, &names, &outputs, &spec.attrs);
    let inputs = spec.inputs.iter().filter(|(n, _, _)| !n.is_empty()).map(|(n, t, d)| value_info(n, *t, d)).collect();
    let outs = outputs.iter().map(|o| ValueInfoProto { name: o.to_string(), ..Default::default() }).collect();
    model(vec![n], inputs, outs, &[(crate::DOMAIN, crate::OP_VERSION)])
}
