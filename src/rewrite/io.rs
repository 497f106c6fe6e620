//! Reading and writing models safely: clear errors for missing/corrupt files, external data kept working
//! (files referenced by the model are copied beside the output when it goes to another folder), output
//! written to a temporary file and renamed (never a partial output), the input never modified.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use onnx_protobuf::{Message, ModelProto, TensorProto};

use super::tensor::is_external;

/// Reads and parses an ONNX model file.
pub fn load(path: &Path) -> Result<ModelProto> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory, not an ONNX model", path.display());
    }
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() {
        bail!("{} is empty", path.display());
    }
    let m = ModelProto::parse_from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid ONNX model (truncated or corrupt protobuf: {e})", path.display()))?;
    if m.graph.as_ref().is_none() || (m.ir_version == 0 && m.opset_import.is_empty()) {
        bail!("{} is not a valid ONNX model (no graph / IR version)", path.display());
    }
    Ok(m)
}

/// A reader for external tensor data relative to `dir` (the model's folder).
pub fn external_reader(dir: Option<&Path>) -> impl Fn(&TensorProto) -> Option<Vec<u8>> {
    let dir = dir.map(Path::to_path_buf);
    move |t: &TensorProto| {
        let dir = dir.as_ref()?;
        let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone());
        let loc = get("location")?;
        let off: u64 = get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let len: Option<u64> = get("length").and_then(|v| v.parse().ok());
        let p = safe_join(dir, &loc)?;
        use std::io::{Read, Seek, SeekFrom};
        let mut f = fs::File::open(p).ok()?;
        f.seek(SeekFrom::Start(off)).ok()?;
        let mut buf = Vec::new();
        match len {
            Some(l) => {
                if l > 1 << 26 {
                    return None;
                }
                buf.resize(l as usize, 0);
                f.read_exact(&mut buf).ok()?;
            }
            None => {
                f.read_to_end(&mut buf).ok()?;
            }
        }
        Some(buf)
    }
}

/// `dir/loc` if `loc` is a plain relative path inside `dir` (no absolute paths, no `..`).
fn safe_join(dir: &Path, loc: &str) -> Option<PathBuf> {
    let p = Path::new(loc);
    if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return None;
    }
    Some(dir.join(p))
}

/// The external data files a model refers to.
pub fn external_files(m: &ModelProto) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    if let Some(g) = m.graph.as_ref() {
        for t in g.initializer.iter().filter(|t| is_external(t)) {
            if let Some(e) = t.external_data.iter().find(|e| e.key == "location") {
                s.insert(e.value.clone());
            }
        }
    }
    s
}

/// Refuses an output path that is the input itself (or any of its external data files).
pub fn check_paths(input: &Path, output: &Path, m: &ModelProto) -> Result<()> {
    let canon = |p: &Path| -> PathBuf {
        match fs::canonicalize(p) {
            Ok(c) => c,
            Err(_) => {
                let parent = p.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new("."));
                fs::canonicalize(parent).map(|d| d.join(p.file_name().unwrap_or_default())).unwrap_or_else(|_| p.to_path_buf())
            }
        }
    };
    let (ci, co) = (canon(input), canon(output));
    if ci == co {
        bail!("output path {} is the input file; choose another output path (the input is never overwritten)", output.display());
    }
    let idir = ci.parent().unwrap_or(Path::new("/")).to_path_buf();
    for loc in external_files(m) {
        if let Some(p) = safe_join(&idir, &loc) {
            if canon(&p) == co {
                bail!("output path {} is an external data file of the input", output.display());
            }
        }
    }
    if output.is_dir() {
        bail!("output path {} is a directory", output.display());
    }
    Ok(())
}

/// Writes `m` to `output` atomically. External data files referenced by the model are copied from
/// `input_dir` beside the output when the output lives elsewhere (existing identical files are kept;
/// different ones are an error, never overwritten).
pub fn save(m: &ModelProto, input_dir: &Path, output: &Path) -> Result<()> {
    let out_dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !out_dir.is_dir() {
        bail!("output folder {} does not exist", out_dir.display());
    }
    let same_dir = fs::canonicalize(out_dir).ok() == fs::canonicalize(input_dir).ok();
    let mut copies = Vec::new();
    if !same_dir {
        for loc in external_files(m) {
            let src = safe_join(input_dir, &loc).with_context(|| format!("external data location '{loc}' is not a relative path inside the model folder"))?;
            let dst = out_dir.join(&loc);
            if dst.exists() {
                if fs::read(&dst).ok() != fs::read(&src).ok() {
                    bail!("{} exists and differs from the input's external data {}; not overwriting it", dst.display(), src.display());
                }
                continue;
            }
            copies.push((src, dst));
        }
    }
    let bytes = m.write_to_bytes().context("serializing the model")?;
    let tmp = out_dir.join(format!(".{}.tmp-{}", output.file_name().and_then(|s| s.to_str()).unwrap_or("model"), std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&bytes).with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()?;
        for (src, dst) in &copies {
            if let Some(p) = dst.parent() {
                fs::create_dir_all(p)?;
            }
            fs::copy(src, dst).with_context(|| format!("copying external data {} → {}", src.display(), dst.display()))?;
        }
        fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
