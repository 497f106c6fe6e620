//! Loading ONNX Runtime into a process that is not ORT's host (the CLI, tests, benchmarks).
//!
//! The crate speaks ORT's C ABI through `ort` in `alternative-backend` mode: inside the custom-op library
//! the host hands us its `OrtApi`; here we dlopen `libonnxruntime.so` ourselves and do the same.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

/// The ORT C API version the crate is compiled against (ort's `api-17` feature): ORT 1.17 is the
/// oldest runtime we support.
pub const ORT_API_VERSION: u32 = ort::sys::ORT_API_VERSION;

static LOADED: OnceLock<PathBuf> = OnceLock::new();
static VERSION: OnceLock<String> = OnceLock::new();

/// Where libonnxruntime.so is looked for: `ORT_DYLIB_PATH`; the `onnxruntime` Python package of the
/// Python environment this executable is installed in (the wheel puts it in `<prefix>/bin`); the
/// project's pinned `.venv`; the `onnxruntime` package of `python3` on PATH.
pub fn find_onnxruntime() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    let prefixes = installed_prefix().into_iter().chain([Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv")]);
    for prefix in prefixes {
        if let Some(p) = site_packages(&prefix).iter().find_map(|sp| newest_lib_in(&sp.join("onnxruntime/capi"))) {
            return Ok(p);
        }
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))"])
        .output();
    if let Ok(out) = out {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
            if let Some(p) = newest_lib_in(&dir) {
                return Ok(p);
            }
        }
    }
    bail!("libonnxruntime.so not found: set ORT_DYLIB_PATH, `pip install onnxruntime` next to flashattn-ort, or run scripts/setup.sh to create .venv")
}

/// The Python environment a pip-installed executable lives in: `<prefix>` of `<prefix>/bin/flashattn-ort`.
fn installed_prefix() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

/// `<prefix>/lib/python*/site-packages` of a Python environment (a venv, or `~/.local` for `pip install --user`).
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else { return vec![] };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("site-packages")).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

fn newest_lib_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        .collect();
    libs.sort();
    libs.pop()
}

/// Loads ONNX Runtime once per process and hands its API to `ort`. Returns the library's path.
pub fn init() -> Result<&'static Path> {
    if let Some(p) = LOADED.get() {
        return Ok(p);
    }
    let path = find_onnxruntime()?;
    init_from(&path)
}

/// Like [`init`] with an explicit path. A second call with another path keeps the first runtime.
pub fn init_from(path: &Path) -> Result<&'static Path> {
    if let Some(p) = LOADED.get() {
        return Ok(p);
    }
    // SAFETY: loading ORT runs its static initialisers, which are sound; the library is leaked on
    // purpose so the API table stays valid for the life of the process.
    let lib = unsafe { libloading::Library::new(path) }
        .with_context(|| format!("loading ONNX Runtime from {}", path.display()))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    let api = unsafe {
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").context("OrtGetApiBase missing: not an ONNX Runtime library")?;
        let base = get_base();
        if base.is_null() {
            bail!("OrtGetApiBase returned null");
        }
        let _ = VERSION.set(std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned());
        ((*base).GetApi)(ORT_API_VERSION)
    };
    if api.is_null() {
        bail!("{} does not provide ORT C API version {ORT_API_VERSION} (ORT ≥ 1.{ORT_API_VERSION} needed)", path.display());
    }
    // SAFETY: ORT returned a valid, immutable API table; `ort` keeps its own copy.
    ort::set_api(unsafe { std::ptr::read(api) });
    Ok(LOADED.get_or_init(|| path.to_path_buf()))
}

/// The version of the loaded runtime, e.g. "1.31.1".
pub fn version() -> Result<String> {
    init()?;
    Ok(VERSION.get().cloned().unwrap_or_default())
}

/// Path of the custom-op library: `FLASHATTN_ORT_LIB`; the `flashattn_ort` Python package of the environment
/// this executable is installed in (the wheel); else the one built next to it (target/{profile}/ or its deps/).
pub fn default_library_path() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("FLASHATTN_ORT_LIB") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = installed_prefix().and_then(|prefix| {
        site_packages(&prefix).into_iter().map(|sp| sp.join("flashattn_ort/libflashattn_ort.so")).find(|p| p.is_file())
    }) {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let cand = d.join("libflashattn_ort.so");
        if cand.exists() {
            return Ok(cand);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Err(anyhow!("libflashattn_ort.so not found next to {} (build it with `cargo build --release`, or set FLASHATTN_ORT_LIB)", exe.display()))
}

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// The process's ORT environment (created on first use).
pub fn environment() -> Result<&'static ort::environment::Environment> {
    init()?;
    // Serialised: two environments built by racing threads would be two ORT environments.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let env = ort::init().with_name("flashattn-ort").build().map_err(|e| anyhow!("creating the ORT environment: {e}"))?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

fn builder_with_library(library: &Path) -> Result<ort::session::builder::SessionBuilder> {
    let builder = ort::session::Session::builder(environment()?).map_err(|e| anyhow!("{e}"))?;
    builder
        .with_operator_library(library)
        .map_err(|e| anyhow!("registering {}: {e}", library.display()))
}

/// ORT adds a custom domain to ONNX's process-wide schema registry with an unguarded check-then-add
/// when the first sessions using it are built: two built at once can fail with "the domain is already
/// exist". One small session, built once before any other, registers the domain.
fn register_domain_once(library: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use crate::model::{flash_attention_model, to_bytes, Dim, FlashNode};
        let dims = || vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(8)];
        let t = onnx_protobuf::tensor_proto::DataType::FLOAT;
        let m = flash_attention_model(&FlashNode { inputs: vec![("query", t, dims()), ("key", t, dims()), ("value", t, dims())], attrs: vec![], with_lse: false });
        // A failure here resurfaces, with its message, when the caller builds its own session.
        if let Ok(mut b) = builder_with_library(library) {
            let _ = b.commit_from_memory(&to_bytes(&m));
        }
    });
}

/// A session builder with our custom-op library registered (CPU execution provider).
pub fn session_builder(library: &Path) -> Result<ort::session::builder::SessionBuilder> {
    register_domain_once(library);
    builder_with_library(library)
}
