// Switchyard's out-of-tree build of candle-kernels for a machine without nvcc:
// PTX and libmoe.a were compiled by nvcc on the GPU machine (sm_90) and are
// copied in from $SWITCHYARD_PREBUILT_KERNELS.
use std::{env, fs, path::PathBuf};
fn main() {
    let pre = PathBuf::from(env::var("SWITCHYARD_PREBUILT_KERNELS").expect("SWITCHYARD_PREBUILT_KERNELS"));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut rs = String::new();
    for e in fs::read_dir(pre.join("ptx")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
        fs::copy(&p, out.join(format!("{name}.ptx"))).unwrap();
        rs.push_str(&format!("pub const {}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}.ptx\"));\n", name.to_uppercase()));
    }
    fs::write(out.join("ptx.rs"), rs).unwrap();
    println!("cargo:rustc-link-search={}", pre.join("root/lib64").display());
    println!("cargo:rustc-link-lib=moe");
    println!("cargo:rustc-link-lib=dylib=cudart");
    println!("cargo:rustc-link-lib=stdc++");
}
