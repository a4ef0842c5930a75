mod common;
use common::*;
use yaraflow::{MultiStreamScanner, ScannerConfig, Uuid};

#[test]
fn smoke() {
    let rules =
        compile(r#"rule a { strings: $a = "hello" $b = "miss" fullword condition: any of them }"#);
    let data = b"xx hello world, mississippi miss hello";
    let mut s = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let id = Uuid::new_v4();
    for c in data.chunks(3) {
        s.scan_chunk(id, c).unwrap();
    }
    let r = s.close_stream(&id).unwrap().unwrap();
    assert_eq!(ours(&rules, &r), reference(&rules, data));
    println!("{}", serde_json::to_string(&r).unwrap());
}
