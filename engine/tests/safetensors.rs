//! Safetensors: round trips through `save`/`Reader` for every dtype, atomic replacement, malformed
//! files (an `Err` naming the file and the problem, never a panic), and the gpt2-tiny fixtures.

use engine::safetensors::{save, Reader};
use engine::{DType, Tensor};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/gpt2-tiny/model.safetensors");
const HUB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/gpt2-tiny/hub-style/model.safetensors");

/// A fresh, empty directory for one test (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("engine-st-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect()
}

/// The raw (dtype, shape, bytes) of `name` as stored in the file, parsed by the reference crate.
fn raw(path: &Path, name: &str) -> (safetensors::Dtype, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    (v.dtype(), v.shape().to_vec(), v.data().to_vec())
}

fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * 10f32.powi(rng.gen_range(-8..6))).collect();
    // Values that exercise rounding: halfway cases, overflow to inf, subnormals, signed zero.
    v.extend([0.0, -0.0, 1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 65504.0, 65520.0, 1e6, -1e6, 6e-8, 1e-40, f32::INFINITY, f32::NEG_INFINITY]);
    v.extend([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 3.0e38, f32::MIN_POSITIVE]);
    v
}

#[test]
fn round_trip_f32_i64_and_metadata() {
    let dir = TempDir::new("rt");
    let path = dir.path("a.safetensors");
    let vals = random_f32(37, 1);
    let n = vals.len();
    let f = Tensor::new(vals.clone(), &[n]).unwrap();
    let ids_v = vec![0i64, -1, i64::MAX, i64::MIN, 50256, 42];
    let ids = Tensor::new(ids_v.clone(), &[2, 3]).unwrap();
    let scalar = Tensor::scalar(2.5);
    let meta = HashMap::from([("format".to_string(), "pt".to_string()), ("step".to_string(), "123".to_string())]);
    save(&path, &[("f".into(), f.clone()), ("ids".into(), ids), ("s".into(), scalar)], None, Some(meta.clone())).unwrap();
    assert_eq!(dir.entries(), vec!["a.safetensors"], "no temp file may remain");

    let r = Reader::open(&path).unwrap();
    assert_eq!(r.path(), path.as_path());
    assert_eq!(r.names(), &["f", "ids", "s"]);
    assert!(r.contains("ids") && !r.contains("nope"));
    assert_eq!(r.metadata().unwrap(), meta);

    let g = r.get("f").unwrap();
    assert_eq!((g.dtype(), g.shape()), (DType::F32, &[n][..]));
    assert_eq!(f32_bits(&g), vals.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let i = r.get("ids").unwrap();
    assert_eq!((i.dtype(), i.shape()), (DType::I64, &[2, 3][..]));
    assert_eq!(i.to_vec_i64().unwrap(), ids_v);
    let s = r.get("s").unwrap();
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(s.to_scalar().unwrap(), 2.5);

    // The exact bytes on disk: little-endian, as the reference crate parses them.
    let (dt, shape, bytes) = raw(&path, "f");
    assert_eq!((dt, shape), (safetensors::Dtype::F32, vec![n]));
    assert_eq!(bytes, vals.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    let (dt, _, bytes) = raw(&path, "ids");
    assert_eq!(dt, safetensors::Dtype::I64);
    assert_eq!(bytes, ids_v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());

    // get_as: converting and checking.
    let bf = r.get_as("f", &[n], DType::BF16).unwrap();
    assert_eq!(bf.dtype(), DType::BF16);
    assert!(r.get_as("ids", &[2, 3], DType::F32).is_err(), "ids must not silently become floats");
    let all = r.all().unwrap();
    assert_eq!(all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["f", "ids", "s"]);

    // Default metadata.
    let p2 = dir.path("b.safetensors");
    save(&p2, &[("x".into(), Tensor::zeros(&[2]))], None, None).unwrap();
    assert_eq!(Reader::open(&p2).unwrap().metadata().unwrap(), HashMap::from([("format".to_string(), "pt".to_string())]));
}

#[test]
fn round_trip_half_types_with_conversion() {
    let dir = TempDir::new("half");
    let vals = random_f32(200, 2);
    let n = vals.len();
    let t = Tensor::new(vals.clone(), &[n]).unwrap();
    let ids = Tensor::new(vec![1i64, 2, 3], &[3]).unwrap();

    for dtype in [DType::BF16, DType::F16] {
        let path = dir.path(&format!("{dtype:?}.safetensors"));
        save(&path, &[("t".into(), t.clone()), ("ids".into(), ids.clone())], Some(dtype), None).unwrap();
        let r = Reader::open(&path).unwrap();
        let got = r.get("t").unwrap();
        assert_eq!(got.dtype(), dtype);
        assert_eq!(r.get("ids").unwrap().dtype(), DType::I64, "ids stay I64 whatever the float dtype");
        let (st_dtype, _, bytes) = raw(&path, "t");
        let want_bits: Vec<u16> = match dtype {
            DType::BF16 => vals.iter().map(|&x| bf16::from_f32(x).to_bits()).collect(),
            _ => vals.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
        };
        assert_eq!(st_dtype, if dtype == DType::BF16 { safetensors::Dtype::BF16 } else { safetensors::Dtype::F16 });
        let file_bits: Vec<u16> = bytes.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(file_bits, want_bits, "{dtype:?}: the file must hold the half crate's rounding");
        // Read back as f32: exactly the widened half values.
        let want_f32: Vec<u32> = match dtype {
            DType::BF16 => vals.iter().map(|&x| bf16::from_f32(x).to_f32().to_bits()).collect(),
            _ => vals.iter().map(|&x| f16::from_f32(x).to_f32().to_bits()).collect(),
        };
        assert_eq!(f32_bits(&got), want_f32);

        // A half tensor saved as-is keeps its bits; one saved as F32 widens exactly.
        let p2 = dir.path(&format!("{dtype:?}-2.safetensors"));
        save(&p2, &[("h".into(), got.clone())], None, None).unwrap();
        assert_eq!(raw(&p2, "h").2, bytes);
        save(&p2, &[("h".into(), got.clone())], Some(DType::F32), None).unwrap();
        assert_eq!(f32_bits(&Reader::open(&p2).unwrap().get("h").unwrap()), want_f32);
    }
    // Native half tensors.
    let hv: Vec<f16> = vals.iter().map(|&x| f16::from_f32(x)).collect();
    let path = dir.path("native.safetensors");
    save(&path, &[("h".into(), Tensor::new(hv.clone(), &[n]).unwrap())], None, None).unwrap();
    assert_eq!(raw(&path, "h").2, hv.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    assert_eq!(dir.entries().iter().filter(|e| e.ends_with(".tmp")).count(), 0);
}

#[test]
fn non_contiguous_tensors_are_saved_in_logical_order() {
    let dir = TempDir::new("strided");
    let path = dir.path("t.safetensors");
    let base: Vec<f32> = (0..12).map(|i| i as f32 * 1.5 - 3.0).collect();
    let m = Tensor::new(base.clone(), &[3, 4]).unwrap();
    let mt = m.t().unwrap();
    assert!(!mt.is_contiguous());
    let narrow = m.narrow(1, 1, 2).unwrap(); // columns 1..3
    save(&path, &[("mt".into(), mt), ("narrow".into(), narrow)], None, None).unwrap();
    let r = Reader::open(&path).unwrap();
    let got = r.get("mt").unwrap();
    assert_eq!(got.shape(), &[4, 3]);
    let want: Vec<f32> = (0..4).flat_map(|j| (0..3).map(move |i| (i, j))).map(|(i, j)| base[i * 4 + j]).collect();
    assert_eq!(got.to_vec_f32().unwrap(), want);
    let got = r.get("narrow").unwrap();
    assert_eq!(got.shape(), &[3, 2]);
    let want: Vec<f32> = (0..3).flat_map(|i| [base[i * 4 + 1], base[i * 4 + 2]]).collect();
    assert_eq!(got.to_vec_f32().unwrap(), want);
    // Also through a BF16 conversion.
    save(&path, &[("mt".into(), m.t().unwrap())], Some(DType::BF16), None).unwrap();
    let want: Vec<f32> = (0..4).flat_map(|j| (0..3).map(move |i| (i, j))).map(|(i, j)| base[i * 4 + j]).map(|x| bf16::from_f32(x).to_f32()).collect();
    assert_eq!(Reader::open(&path).unwrap().get("mt").unwrap().to_vec_f32().unwrap(), want);
}

#[test]
fn saving_over_an_existing_file_replaces_it_atomically() {
    let dir = TempDir::new("atomic");
    let path = dir.path("ckpt.safetensors");
    let v1 = Tensor::new(vec![1.0f32; 1000], &[1000]).unwrap();
    let v2 = Tensor::new(vec![2.0f32; 10], &[10]).unwrap();
    save(&path, &[("w".into(), v1)], None, None).unwrap();
    let old = Reader::open(&path).unwrap(); // holds a map of version 1
    save(&path, &[("w".into(), v2), ("extra".into(), Tensor::zeros(&[1]))], None, None).unwrap();
    assert_eq!(dir.entries(), vec!["ckpt.safetensors"], "no temp file may remain");
    // A reader of the old file still sees a complete old file (it was replaced, not overwritten).
    assert_eq!(old.get("w").unwrap().to_vec_f32().unwrap(), vec![1.0; 1000]);
    let new = Reader::open(&path).unwrap();
    assert_eq!(new.names(), &["extra", "w"]);
    assert_eq!(new.get("w").unwrap().to_vec_f32().unwrap(), vec![2.0; 10]);

    // A failed save leaves no temp file behind and names the path: the target is a directory.
    let blocked = dir.path("blocked.safetensors");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep"), b"x").unwrap();
    let e = save(&blocked, &[("w".into(), Tensor::zeros(&[1]))], None, None).unwrap_err().to_string();
    assert!(e.contains("blocked.safetensors"), "{e}");
    assert_eq!(dir.entries(), vec!["blocked.safetensors", "ckpt.safetensors"], "the temp file must be removed after a failure");
    // Into a directory that does not exist.
    let e = save(dir.path("missing/x.safetensors"), &[("w".into(), Tensor::zeros(&[1]))], None, None).unwrap_err().to_string();
    assert!(e.contains("missing/x.safetensors"), "{e}");
}

// ---- malformed files ----

/// A safetensors file from a raw header string and a data buffer.
fn file_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Opening (and, if that succeeds, reading `tensor`) must fail without panicking, with a message
/// that names the file and contains one of `words`.
fn expect_error(dir: &TempDir, name: &str, bytes: &[u8], tensor: &str, words: &[&str]) -> String {
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    let result = std::panic::catch_unwind(|| Reader::open(&path).and_then(|r| r.get(tensor)).map(|_| ()));
    let err = match result {
        Err(_) => panic!("{name}: panicked instead of returning an error"),
        Ok(Ok(())) => panic!("{name}: malformed file was accepted"),
        Ok(Err(e)) => e.to_string(),
    };
    assert!(err.contains(&path.display().to_string()), "{name}: message does not name the file: {err}");
    let lower = err.to_lowercase();
    assert!(words.iter().any(|w| lower.contains(&w.to_lowercase())), "{name}: message {err:?} does not say any of {words:?}");
    err
}

#[test]
fn malformed_files_are_errors_naming_the_file() {
    let dir = TempDir::new("bad");
    // A valid file to cut up.
    let good_path = dir.path("good.safetensors");
    save(&good_path, &[("a".into(), Tensor::ones(&[4, 4])), ("b".into(), Tensor::zeros(&[3]))], None, None).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    assert!(Reader::open(&good_path).unwrap().get("a").is_ok());

    expect_error(&dir, "empty.safetensors", &[], "a", &["shorter", "header", "empty"]);
    expect_error(&dir, "short.safetensors", &[1, 0, 0], "a", &["shorter", "header"]);
    // Header length pointing past the end of the file.
    let mut trunc_header = good.clone();
    trunc_header.truncate(8 + 10);
    expect_error(&dir, "trunc-header.safetensors", &trunc_header, "a", &["truncated", "header length"]);
    let mut huge = (u64::MAX / 2).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    expect_error(&dir, "huge-header.safetensors", &huge, "a", &["header"]);
    // Truncated data: the last bytes cut off.
    expect_error(&dir, "trunc-data.safetensors", &good[..good.len() - 5], "a", &["truncated"]);
    // Extra bytes after the data.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 16]);
    expect_error(&dir, "padded.safetensors", &padded, "a", &["padded", "truncated"]);
    // Garbage JSON.
    expect_error(&dir, "garbage.safetensors", &file_bytes("{not json at all", &[]), "a", &["header"]);
    expect_error(&dir, "not-object.safetensors", &file_bytes("[1, 2, 3]", &[]), "a", &["header"]);
    // Offsets out of range: the tensor claims bytes the file does not have.
    let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    expect_error(&dir, "offsets-range.safetensors", &file_bytes(h, &[0; 8]), "a", &["offset", "truncated"]);
    // Offsets that do not start at 0 / leave a gap.
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    expect_error(&dir, "offsets-gap.safetensors", &file_bytes(h, &[0; 16]), "a", &["offset"]);
    // Offsets that disagree with dtype * shape (16 bytes for 3 f32).
    let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
    expect_error(&dir, "offsets-shape.safetensors", &file_bytes(h, &[0; 16]), "a", &["dtype and shape", "offset"]);
    // Unsupported dtypes: the file opens, reading that tensor fails and says which dtype.
    let h = r#"{"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"ok":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#;
    let e = expect_error(&dir, "f64.safetensors", &file_bytes(h, &[0; 20]), "d", &["F64"]);
    assert!(e.contains("\"d\""), "{e}");
    assert!(Reader::open(dir.path("f64.safetensors")).unwrap().get("ok").is_ok(), "other tensors stay readable");
    let h = r#"{"m":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}"#;
    expect_error(&dir, "bool.safetensors", &file_bytes(h, &[1, 0, 1, 0]), "m", &["BOOL"]);
    // Unknown dtype string.
    let h = r#"{"m":{"dtype":"Q4","shape":[4],"data_offsets":[0,4]}}"#;
    expect_error(&dir, "unknown-dtype.safetensors", &file_bytes(h, &[0; 4]), "m", &["header", "dtype"]);

    // A missing tensor name.
    let r = Reader::open(&good_path).unwrap();
    let e = r.get("transformer.nope").unwrap_err().to_string();
    assert!(e.contains(&good_path.display().to_string()) && e.contains("transformer.nope"), "{e}");
    // get_as with the wrong shape names the tensor and both shapes.
    let e = r.get_as("a", &[4, 5], DType::F32).unwrap_err().to_string();
    assert!(e.contains(&good_path.display().to_string()) && e.contains("\"a\"") && e.contains("[4, 4]") && e.contains("[4, 5]"), "{e}");
    // A missing file.
    let e = Reader::open(dir.path("absent.safetensors")).err().expect("missing file").to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
}

#[test]
fn i32_ids_widen_to_i64() {
    let dir = TempDir::new("i32");
    let v = [7i32, -3, i32::MAX, i32::MIN];
    let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let h = r#"{"ids":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let path = dir.path("i32.safetensors");
    std::fs::write(&path, file_bytes(h, &data)).unwrap();
    let t = Reader::open(&path).unwrap().get("ids").unwrap();
    assert_eq!((t.dtype(), t.shape()), (DType::I64, &[2, 2][..]));
    assert_eq!(t.to_vec_i64().unwrap(), v.iter().map(|&x| x as i64).collect::<Vec<_>>());
}

// ---- fixtures ----

fn expected_model_names() -> Vec<String> {
    let mut v = vec!["wte.weight".to_string(), "wpe.weight".into(), "ln_f.weight".into(), "ln_f.bias".into()];
    for l in 0..2 {
        for p in ["ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"] {
            for s in ["weight", "bias"] {
                v.push(format!("h.{l}.{p}.{s}"));
            }
        }
    }
    v
}

#[test]
fn gpt2_tiny_fixture_layout() {
    let r = Reader::open(MODEL).unwrap();
    let mut want: Vec<String> = expected_model_names().into_iter().map(|n| format!("transformer.{n}")).collect();
    want.sort();
    assert_eq!(r.names(), want.as_slice());
    assert_eq!(r.names().len(), 28);
    assert_eq!(r.metadata().unwrap().get("format").map(String::as_str), Some("pt"));
    for (name, shape) in [
        ("transformer.wte.weight", vec![512, 48]),
        ("transformer.wpe.weight", vec![64, 48]),
        ("transformer.h.0.attn.c_attn.weight", vec![48, 144]),
        ("transformer.h.1.attn.c_attn.bias", vec![144]),
        ("transformer.h.0.mlp.c_fc.weight", vec![48, 192]),
        ("transformer.h.1.mlp.c_proj.weight", vec![192, 48]),
        ("transformer.ln_f.bias", vec![48]),
    ] {
        let t = r.get(name).unwrap();
        assert_eq!((t.shape(), t.dtype()), (shape.as_slice(), DType::F32), "{name}");
        assert!(r.get_as(name, &shape, DType::F32).is_ok());
    }
    // Values are real (random init, not zeros), e.g. wte ~ N(0, 0.02).
    let wte = r.get("transformer.wte.weight").unwrap().to_vec_f32().unwrap();
    let std = (wte.iter().map(|x| x * x).sum::<f32>() / wte.len() as f32).sqrt();
    assert!((0.015..0.025).contains(&std), "wte std {std}");
}

#[test]
fn hub_style_fixture_holds_the_same_weights() {
    let hub = Reader::open(HUB).unwrap();
    let model = Reader::open(MODEL).unwrap();
    assert_eq!(hub.names().len(), 30);
    for n in expected_model_names() {
        let a = hub.get(&n).unwrap();
        let b = model.get(&format!("transformer.{n}")).unwrap();
        assert_eq!(a.shape(), b.shape(), "{n}");
        assert_eq!(f32_bits(&a), f32_bits(&b), "{n}: hub-style and save_pretrained values differ");
    }
    // The two extra tensors are the causal-mask buffers.
    for l in 0..2 {
        let mask = hub.get(&format!("h.{l}.attn.bias")).unwrap();
        assert_eq!(mask.shape(), &[1, 1, 64, 64]);
        let m = mask.to_vec_f32().unwrap();
        for i in 0..64 {
            for j in 0..64 {
                assert_eq!(m[i * 64 + j], if j <= i { 1.0 } else { 0.0 });
            }
        }
    }
}

#[test]
fn concurrent_saves_to_one_path_all_succeed_and_leave_a_whole_file() {
    let dir = TempDir::new("concurrent");
    let path = dir.path("same.safetensors");
    std::thread::scope(|s| {
        for k in 0..4 {
            let path = path.clone();
            s.spawn(move || {
                for i in 0..25 {
                    let v = (k * 100 + i) as f32;
                    let t = Tensor::full(&[20_000], v);
                    save(&path, &[("w".into(), t)], None, None).unwrap_or_else(|e| panic!("thread {k} save {i}: {e}"));
                }
            });
        }
    });
    let w = Reader::open(&path).unwrap().get("w").unwrap().to_vec_f32().unwrap();
    assert!(w.iter().all(|&x| x == w[0]), "the file mixes two saves");
    assert_eq!(dir.entries(), vec!["same.safetensors"]);
}
