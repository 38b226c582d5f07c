//! `strings`: `String` churn: `format!`, `clone`, concatenation and drops of strings of varied
//! lengths, and a `HashMap<String, String>` whose values are replaced and removed. Every value
//! starts with its key, which is checked at the end.

use std::collections::HashMap;
use std::hint::black_box;

use rand::Rng;

use super::{rng, scaled};
use crate::verify::ensure;

pub const ABOUT: &str = "format!/clone/concat of 0..512 B Strings, HashMap<String, String> updates";

const OPS: usize = 2_500_000;
const KEYS: u64 = 20_000;
const BASES: usize = 64;

pub fn run(scale: f64) -> u64 {
    let ops = scaled(OPS, scale);
    let mut rng = rng(0x57a1);
    let bases: Vec<String> = (0..BASES)
        .map(|_| {
            let len = rng.gen_range(0..=512);
            (0..len).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
        })
        .collect();
    let mut map: HashMap<String, String> = HashMap::new();
    let mut sum = 0u64;
    for i in 0..ops {
        let key = format!("key-{}", rng.gen_range(0..KEYS));
        let base = &bases[rng.gen_range(0..BASES)];
        match rng.gen_range(0..10) {
            0..=4 => {
                let value = format!("{key}|{i}|") + base;
                map.insert(key, value);
            }
            5 => {
                if let Some(old) = map.remove(&key) {
                    sum = sum.wrapping_add(old.len() as u64);
                }
            }
            6..=7 => {
                if let Some(value) = map.get(&key) {
                    let copy = value.clone();
                    let joined = [copy.as_str(), base.as_str()].concat();
                    sum = sum.wrapping_add(black_box(joined).len() as u64);
                }
            }
            _ => {
                let mut s = key.clone();
                s.push(':');
                s.push_str(&base[..base.len() / 2]);
                s += &i.to_string();
                let upper = black_box(s).to_uppercase();
                sum = sum.wrapping_add(upper.len() as u64);
            }
        }
    }
    for (key, value) in &map {
        let ok = value.starts_with(key.as_str()) && value.as_bytes().get(key.len()) == Some(&b'|');
        ensure(ok, "strings map value", value.len() as u64);
    }
    sum.wrapping_add(map.len() as u64)
}
