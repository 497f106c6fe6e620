//! Reading the node's attributes from ORT, at kernel creation and during shape inference.

use std::ffi::CString;
use std::ptr;

use ort::operator::{FromOpAttr, KernelContext, ShapeInferenceContext};
use ort::AsPointer;

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

/// One attribute during shape inference; None when the node does not set it. ORT 1.17 answers an
/// absent attribute with a null pointer and no error, so the pointer is checked before it is read.
fn shape_attr<T: FromOpAttr>(ctx: &ShapeInferenceContext, name: &str) -> Option<T> {
    let api = ort::api();
    let name = CString::new(name).ok()?;
    let mut attr = ptr::null();
    let st = unsafe { (api.ShapeInferContext_GetAttribute)(ctx.ptr(), name.as_ptr(), &mut attr) };
    if !st.0.is_null() {
        unsafe { (api.ReleaseStatus)(st.0) };
        return None;
    }
    if attr.is_null() {
        return None;
    }
    // Asking with an empty buffer reports the value's length (and an error we do not need).
    let mut len = 0usize;
    let st = unsafe { (api.ReadOpAttr)(attr, T::attr_type(), ptr::null_mut(), 0, &mut len) };
    if !st.0.is_null() {
        unsafe { (api.ReleaseStatus)(st.0) };
    }
    unsafe { T::from_op_attr(attr, len) }.ok()
}

impl AttributeSource for ShapeInferenceContext {
    fn int(&self, name: &str) -> Option<i64> {
        shape_attr::<i64>(self, name)
    }
    fn float(&self, name: &str) -> Option<f32> {
        shape_attr::<f32>(self, name)
    }
    fn string(&self, name: &str) -> Option<String> {
        shape_attr::<String>(self, name)
    }
}
