//! Reading the node's attributes from ORT, at kernel creation and during shape inference.

use ort::operator::{KernelContext, ShapeInferenceContext};

use crate::schema::AttributeSource;

impl AttributeSource for KernelContext<'_> {
    fn int(&self, name: &str) -> Option<i64> {
        self.get::<i64>(name)
    }
    fn float(&self, name: &str) -> Option<f32> {
        self.get::<f32>(name)
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get::<String>(name)
    }
}

impl AttributeSource for ShapeInferenceContext {
    fn int(&self, name: &str) -> Option<i64> {
        self.attr::<i64>(name).ok()
    }
    fn float(&self, name: &str) -> Option<f32> {
        self.attr::<f32>(name).ok()
    }
    fn string(&self, name: &str) -> Option<String> {
        self.attr::<String>(name).ok()
    }
}
