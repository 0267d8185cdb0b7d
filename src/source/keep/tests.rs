use super::*;
use proptest::prelude::*;
use serde_json::json;

fn parse(bytes: &[u8], keep: &Keep) -> Result<Value, serde_json::Error> {
    keep.parse(bytes)
}

fn keep(paths: &[&str]) -> Keep {
    let mut k = Keep::nothing();
    for p in paths {
        k.insert(&p.split('.').collect::<Vec<_>>());
    }
    k
}

/// What a template path lookup finds: objects by key, arrays by index (a name there is an
/// error, as in handlebars), anything else missing.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Result<Option<&'a Value>, ()> {
    let mut at = Some(v);
    for seg in path {
        at = match at {
            Some(Value::Array(a)) => a.get(seg.parse::<usize>().map_err(|_| ())?),
            Some(Value::Object(m)) => m.get(seg),
            _ => None,
        };
    }
    Ok(at)
}

const DOC: &str = r#"{"a":{"b":1,"c":{"d":[1,2]},"e":"x"},"list":[{"n":1,"m":2},{"n":3}],"s":"t","big":"skip"}"#;

#[test]
fn only_kept_paths_are_built_and_each_is_whole() {
    let v = parse(DOC.as_bytes(), &keep(&["a.c", "s"])).unwrap();
    assert_eq!(v, json!({"a": {"c": {"d": [1, 2]}}, "s": "t"}));
}

#[test]
fn arrays_keep_their_length_and_only_kept_elements() {
    let v = parse(DOC.as_bytes(), &keep(&["list.1.n"])).unwrap();
    assert_eq!(v, json!({"list": [null, {"n": 3}]}));
    // An index written `01` reads element 1, as a template path does.
    assert_eq!(parse(DOC.as_bytes(), &keep(&["list.01"])).unwrap(), json!({"list": [null, {"n": 3}]}));
    // A name on an array keeps the array's shape, so the lookup still fails as it would.
    let v = parse(DOC.as_bytes(), &keep(&["list.n"])).unwrap();
    assert_eq!(v, json!({"list": [null, null]}));
}

#[test]
fn a_path_through_a_scalar_keeps_the_scalar() {
    let v = parse(DOC.as_bytes(), &keep(&["s.x", "a.b.c"])).unwrap();
    assert_eq!(v, json!({"a": {"b": 1}, "s": "t"}));
}

#[test]
fn keeping_a_path_and_its_prefix_keeps_the_prefix_whole() {
    let a = keep(&["a.c.d", "a"]);
    let b = keep(&["a", "a.c.d"]);
    assert_eq!(a, b);
    assert_eq!(parse(DOC.as_bytes(), &a).unwrap()["a"], json!({"b":1,"c":{"d":[1,2]},"e":"x"}));
    let mut merged = keep(&["s"]);
    merged.merge(&keep(&["a.b"]));
    assert_eq!(merged, keep(&["s", "a.b"]));
    merged.merge(&Keep::everything());
    assert!(merged.is_everything());
}

#[test]
fn an_empty_path_keeps_everything() {
    let k = keep(&["a.b"]);
    let mut all = k.clone();
    all.insert::<&str>(&[]);
    assert!(all.is_everything());
    assert_eq!(parse(DOC.as_bytes(), &all).unwrap(), serde_json::from_str::<Value>(DOC).unwrap());
}

#[test]
fn a_repeated_key_keeps_its_last_value_like_serde_json() {
    let doc = br#"{"a":{"x":1},"b":2,"a":{"x":3,"y":4},"b":5}"#;
    let full: Value = serde_json::from_slice(doc).unwrap();
    let v = parse(doc, &keep(&["a.x", "b"])).unwrap();
    assert_eq!(v, json!({"a": {"x": 3}, "b": 5}));
    assert_eq!(v["a"]["x"], full["a"]["x"]);
    assert_eq!(v["b"], full["b"]);
}

/// Everything the full parse refuses, refused with the same words at the same place, even
/// where it sits in a part nobody reads. `IgnoredAny` would accept most of these.
#[test]
fn what_the_full_parse_refuses_is_refused_with_the_same_error() {
    let deep = format!("{{\"skip\":{}{}}}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"{\"a\":1,}".to_vec(),
        b"{\"a\":1} x".to_vec(),
        b"{\"skip\":\"\xff\xfe\"}".to_vec(),
        b"{\"sk\xffip\":1}".to_vec(),
        br#"{"skip":"\ud800"}"#.to_vec(),
        br#"{"skip":"\uZZZZ"}"#.to_vec(),
        br#"{"skip":"\q"}"#.to_vec(),
        b"{\"skip\":\"a\x01b\"}".to_vec(),
        br#"{"skip":1e400}"#.to_vec(),
        br#"{"skip":-1e400}"#.to_vec(),
        br#"{"skip":01}"#.to_vec(),
        br#"{"skip":[1,]}"#.to_vec(),
        br#"{"skip":tru}"#.to_vec(),
        br#"{"a":{"b":1e999}}"#.to_vec(),
        deep.into_bytes(),
    ];
    for bytes in cases {
        let full = serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string());
        let pruned = parse(&bytes, &keep(&["a.b"])).map_err(|e| e.to_string());
        assert!(full.is_err(), "{:?} is accepted by serde_json", String::from_utf8_lossy(&bytes));
        assert_eq!(pruned.unwrap_err(), full.unwrap_err(), "{:?}", String::from_utf8_lossy(&bytes));
    }
}

/// Why the skipped parts are not read with `IgnoredAny`: serde_json's skipping accepts all of
/// these, which the full parse refuses.
#[test]
fn ignored_any_would_accept_what_the_full_parse_refuses() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for bytes in [&b"\"\xff\""[..], br#""\ud800""#, b"1e400", deep.as_bytes()] {
        assert!(serde_json::from_slice::<Value>(bytes).is_err());
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok(), "{}", String::from_utf8_lossy(bytes));
        assert!(keep(&["a"]).parse(&[b"{\"skip\":", bytes, b"}"].concat()).is_err());
    }
}

#[test]
fn numbers_are_the_values_the_full_parse_makes() {
    let doc = br#"{"n":[0,-1,18446744073709551615,-9223372036854775808,1.5,1e300,-0.0,12345678901234567890e-5]}"#;
    let full: Value = serde_json::from_slice(doc).unwrap();
    assert_eq!(parse(doc, &keep(&["n.0", "n.1", "n.2", "n.3", "n.4", "n.5", "n.6", "n.7"])).unwrap(), full);
}

/// JSON values whose keys collide with indices (`0`, `01`) and repeat across levels.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-c\u{e9}\"\\\\]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map("(a|b|c|0|1|01)", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_path() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("(a|b|c|0|1|01|2)", 1..4)
}

proptest! {
    /// For every kept path, and every prefix on the way to it, a lookup in the pruned parse
    /// finds what it finds in the full parse (or fails as it fails).
    #[test]
    fn pruned_then_looked_up_equals_full_then_looked_up(
        doc in arb_json(),
        paths in proptest::collection::vec(arb_path(), 0..5),
    ) {
        let bytes = serde_json::to_vec(&doc).unwrap();
        let mut k = Keep::nothing();
        for p in &paths {
            k.insert(p);
        }
        let full: Value = serde_json::from_slice(&bytes).unwrap();
        let pruned = parse(&bytes, &k).unwrap();
        for p in &paths {
            prop_assert_eq!(lookup(&pruned, p), lookup(&full, p), "path {:?}", p);
            for n in 0..p.len() {
                let (a, b) = (lookup(&pruned, &p[..n]), lookup(&full, &p[..n]));
                let kind = |v: Result<Option<&Value>, ()>| v.map(|v| v.map(std::mem::discriminant));
                prop_assert_eq!(kind(a), kind(b), "prefix {:?}", &p[..n]);
            }
        }
    }

    /// Any bytes: refused by the pruned parse exactly when, and as, the full parse refuses them.
    #[test]
    fn any_bytes_are_refused_exactly_as_the_full_parse_refuses_them(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            arb_json().prop_flat_map(|v| {
                let b = serde_json::to_vec(&v).unwrap();
                let n = b.len();
                (Just(b), 0..n.max(1), any::<u8>())
            }).prop_map(|(mut b, i, x)| { if !b.is_empty() { b[i] = x; } b }),
        ],
        path in arb_path(),
    ) {
        let full = serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string());
        let pruned = parse(&bytes, &keep(&[path.join(".").as_str()])).map_err(|e| e.to_string());
        prop_assert_eq!(pruned.is_ok(), full.is_ok());
        if let (Err(a), Err(b)) = (pruned, full) {
            prop_assert_eq!(a, b);
        }
    }
}
