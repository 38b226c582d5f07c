//! The instruction counter's parts: cachegrind's "I refs" total, the crate's feature table it
//! expands presets with, its catalogue of builds and its table.

use std::path::Path;

use fortalloc_bench::instr::{self, expand, feature_table, parse_i_refs, thousands, Kind};

#[test]
fn i_refs_is_the_last_process_total() {
    let stderr = "\
==411== Cachegrind, a cache and branch-prediction profiler
==411== Command: env LD_PRELOAD=/x/libfortalloc.so ./simple 0.025 1
==411== I   refs:      1,234
==411== Command: ./simple 0.025 1
==411== I refs: 987,654,321
";
    assert_eq!(parse_i_refs(stderr), Some(987_654_321));
    assert_eq!(
        parse_i_refs("==1== I   refs:      202,327\n==1== \n"),
        Some(202_327)
    );
    assert_eq!(parse_i_refs("==1== Invalid read; D refs: 5\n"), None);
    assert_eq!(parse_i_refs(""), None);
    assert_eq!(thousands(987_654_321), "987,654,321");
    assert_eq!(thousands(12), "12");
    assert_eq!(thousands(1000), "1,000");
}

#[test]
fn presets_expand_through_the_crates_feature_table() {
    let toml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml")).unwrap();
    let table = feature_table(&toml);
    let mut secure_max = expand(&table, &["secure-max".into()]);
    // secure-max is every defence, as the ladder's last rung is; the preset's own name stays in
    // its set, so the two are built apart (code could test the preset's name).
    assert!(secure_max.remove("secure-max"));
    let every: Vec<String> = instr::DEFENCES.iter().map(|d| d.to_string()).collect();
    assert_eq!(secure_max, expand(&table, &every));
    for d in instr::DEFENCES {
        assert!(secure_max.contains(d), "{d}");
    }
    let mut secure = expand(&table, &["secure".into()]);
    assert!(secure.remove("secure"));
    assert!(secure.is_subset(&secure_max) && secure != secure_max);
    // Implications come along: a defence alone may bring another.
    let quarantine = expand(&table, &["quarantine".into()]);
    assert!(quarantine.contains("double-free"), "{quarantine:?}");
    // Dependency entries are not features of the crate.
    let deps =
        feature_table("[features]\na = [\"dep:x\", \"y/z\", \"b\"]\nb = []\n[dependencies]\nc = \"1\"\n");
    assert_eq!(
        expand(&deps, &["a".into()]).into_iter().collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(!deps.contains_key("c"));
}

#[test]
fn the_ladder_ends_at_both_presets_and_every_build_has_a_measured_base() {
    let toml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml")).unwrap();
    let table = feature_table(&toml);
    let all = instr::catalogue();
    // The defences a build has, without the presets' own names.
    let features = |name: &str| match &all.iter().find(|b| b.name == name).unwrap().kind {
        Kind::Fortalloc(f) => {
            let mut on = expand(&table, f);
            on.retain(|f| instr::DEFENCES.contains(&f.as_str()));
            on
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(features("up-to-quarantine"), features("secure"));
    assert_eq!(features("up-to-seal-freed-large"), features("secure-max"));
    for b in &all {
        if let Some(base) = &b.base {
            assert!(all.iter().any(|o| &o.name == base), "{}: base {base}", b.name);
        }
    }
    let picked: Vec<String> = instr::select("presets")
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(picked, ["plain", "secure", "secure-max", "mimalloc-secure"]);
    assert!(instr::select("nope").is_err());
}

#[test]
fn instr_table_gives_marginals_over_each_base_and_ratios_to_the_reference() {
    let all = instr::catalogue();
    let find = |name: &str| all.iter().find(|b| b.name == name).unwrap();
    let rows = [
        instr::Row {
            build: find("plain"),
            count: Some(1_000_000),
            same_as: None,
        },
        instr::Row {
            build: find("secure"),
            count: Some(1_500_000),
            same_as: None,
        },
        instr::Row {
            build: find("secure-max"),
            count: None,
            same_as: None,
        },
        instr::Row {
            build: find("only-canary"),
            count: Some(900_000),
            same_as: None,
        },
        instr::Row {
            build: find("mimalloc-secure"),
            count: Some(2_000_000),
            same_as: None,
        },
    ];
    let t = instr::render("simple", &rows);
    assert!(t.contains("| plain | - | 1,000,000 | - | 0.50x |"), "{t}");
    assert!(
        t.contains("| secure | preset secure | 1,500,000 | +500,000 (+50.0%) (plain) | 0.75x |"),
        "{t}"
    );
    assert!(t.contains("| secure-max | preset secure-max | FAILED |"), "{t}");
    assert!(
        t.contains("| only-canary | canary | 900,000 | -100,000 (-10.0%) (plain) | 0.45x |"),
        "{t}"
    );
}
