//! Builds the TensorRT binding layer, and only with the `tensorrt` feature:
//! without it this script does nothing, so a default build needs neither
//! libclang nor any SDK. See TENSORRT.md.
//!
//! With the feature:
//! - bindgen turns `tensorrt/shim.h` into `$OUT_DIR/trt_shim.rs` (always);
//! - with TensorRT (`TENSORRT_ROOT`) and CUDA (`CUDA_HOME`, `CUDA_PATH` or
//!   `/usr/local/cuda`) found, `tensorrt/shim.cpp` is compiled and linked
//!   against nvinfer and cudart;
//! - `IGW_TENSORRT_MOCK=1` compiles `tensorrt/mock_shim.c` instead, a CPU
//!   stand-in for tests, and sets `cfg(tensorrt_mock)`;
//! - `IGW_TENSORRT_BINDINGS_ONLY=1` compiles and links no shim (CI type
//!   checks: an rlib links nothing, but a binary built this way cannot link);
//! - anything else fails the build, saying what to set.
//!
//! The two escape hatches win over an SDK that is found: whoever sets one
//! asked for it explicitly.

/// Every variable this script reads; a change to any re-runs it.
const ENV_VARS: [&str; 5] = [
    "TENSORRT_ROOT",
    "CUDA_HOME",
    "CUDA_PATH",
    "IGW_TENSORRT_MOCK",
    "IGW_TENSORRT_BINDINGS_ONLY",
];

fn main() {
    // Declared even without the feature so `cfg(tensorrt_mock)` never trips
    // the unexpected_cfgs lint.
    println!("cargo::rustc-check-cfg=cfg(tensorrt_mock)");
    for var in ENV_VARS {
        println!("cargo::rerun-if-env-changed={var}");
    }
    for file in [
        "tensorrt/shim.h",
        "tensorrt/shim.cpp",
        "tensorrt/mock_shim.c",
    ] {
        println!("cargo::rerun-if-changed={file}");
    }

    #[cfg(feature = "tensorrt")]
    tensorrt::build();
}

#[cfg(feature = "tensorrt")]
mod tensorrt {
    use std::env;
    use std::path::{Path, PathBuf};

    pub(crate) fn build() {
        let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
        let dir = manifest.join("tensorrt");

        bindings(&dir.join("shim.h"), &out.join("trt_shim.rs"));

        if flag("IGW_TENSORRT_MOCK") {
            println!(
                "cargo::warning=tensorrt: IGW_TENSORRT_MOCK=1, building the CPU mock shim (tests only, not a model)"
            );
            cc::Build::new()
                .file(dir.join("mock_shim.c"))
                .include(&dir)
                .std("c11")
                .warnings(true)
                .extra_warnings(true)
                .compile("igw_trt_mock_shim");
            println!("cargo::rustc-cfg=tensorrt_mock");
            return;
        }
        if flag("IGW_TENSORRT_BINDINGS_ONLY") {
            println!(
                "cargo::warning=tensorrt: IGW_TENSORRT_BINDINGS_ONLY=1, no shim compiled or linked"
            );
            return;
        }
        match (tensorrt_root(), cuda_root()) {
            (Ok(trt), Ok(cuda)) => real_shim(&dir, &trt, &cuda),
            (trt, cuda) => {
                let why: Vec<String> = [trt.err(), cuda.err()].into_iter().flatten().collect();
                // A message and exit(1), not a panic: cargo prints stderr
                // as is, without a backtrace hint burying the advice.
                eprintln!(
                    "\nerror: the `tensorrt` feature needs the TensorRT SDK and CUDA, and {}.\n\
                     Set TENSORRT_ROOT to the TensorRT install (with include/NvInfer.h and \
                     lib/libnvinfer.so) and CUDA_HOME (or CUDA_PATH) to the CUDA toolkit \
                     (default /usr/local/cuda).\n\
                     Without them: IGW_TENSORRT_MOCK=1 builds a CPU mock for tests, and \
                     IGW_TENSORRT_BINDINGS_ONLY=1 builds the bindings without linking \
                     (cargo build -p engine --lib --features tensorrt).\n\
                     See engine/TENSORRT.md.",
                    why.join(", and ")
                );
                std::process::exit(1);
            }
        }
    }

    /// `1` (or `true`) turns a switch on; anything else, or unset, is off.
    fn flag(name: &str) -> bool {
        env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    fn bindings(header: &Path, out: &Path) {
        let generated = bindgen::Builder::default()
            .header(header.to_string_lossy())
            .allowlist_function("trt_.*")
            .allowlist_type("trt_.*")
            .allowlist_var("TRT_.*")
            // Status and dtype codes as i32, to compare with the int32_t
            // the functions return without casts.
            .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
            .rust_edition(bindgen::RustEdition::Edition2024)
            .generate()
            .unwrap_or_else(|e| {
                panic!(
                    "bindgen failed on {}: {e}\n(bindgen needs libclang: on Debian, \
                     `apt-get install libclang-dev`, or set LIBCLANG_PATH)",
                    header.display()
                )
            });
        generated
            .write_to_file(out)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    }

    fn tensorrt_root() -> Result<PathBuf, String> {
        let Some(root) = env::var_os("TENSORRT_ROOT").map(PathBuf::from) else {
            return Err("TENSORRT_ROOT is not set".into());
        };
        let header = root.join("include/NvInfer.h");
        if !header.is_file() {
            return Err(format!("{} does not exist", header.display()));
        }
        lib_dir(&root, "libnvinfer.so").map(|_| root)
    }

    fn cuda_root() -> Result<PathBuf, String> {
        let root = ["CUDA_HOME", "CUDA_PATH"]
            .into_iter()
            .find_map(env::var_os)
            .map_or_else(|| PathBuf::from("/usr/local/cuda"), PathBuf::from);
        let header = root.join("include/cuda_runtime_api.h");
        if !header.is_file() {
            return Err(format!(
                "CUDA was not found ({} does not exist)",
                header.display()
            ));
        }
        lib_dir(&root, "libcudart.so").map(|_| root)
    }

    /// The directory under `root` that holds `lib`: toolkits and tarballs
    /// differ between lib, lib64 and the CUDA targets layout.
    fn lib_dir(root: &Path, lib: &str) -> Result<PathBuf, String> {
        [
            "lib64",
            "lib",
            "targets/x86_64-linux/lib",
            "targets/sbsa-linux/lib",
        ]
        .iter()
        .map(|sub| root.join(sub))
        .find(|dir| dir.join(lib).exists())
        .ok_or_else(|| format!("{lib} was not found under {}/lib*", root.display()))
    }

    fn real_shim(dir: &Path, trt: &Path, cuda: &Path) {
        // The SDK headers are system includes: their own deprecation
        // warnings are not ours to fix.
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file(dir.join("shim.cpp"))
            .include(dir)
            .flag(format!("-isystem{}", trt.join("include").display()))
            .flag(format!("-isystem{}", cuda.join("include").display()))
            .warnings(true)
            .extra_warnings(true)
            .compile("igw_trt_shim");
        for root in [trt, cuda] {
            for lib in ["libnvinfer.so", "libcudart.so"] {
                if let Ok(found) = lib_dir(root, lib) {
                    println!("cargo::rustc-link-search=native={}", found.display());
                }
            }
        }
        println!("cargo::rustc-link-lib=dylib=nvinfer");
        println!("cargo::rustc-link-lib=dylib=cudart");
    }
}
