//! Bulk import of customers from CSV, on SQLite and PostgreSQL: every row
//! checked with the API's rules, the good ones written, the bad ones
//! reported by line without their data, and a second import changing
//! nothing.

use kihon4_core::audit::{Actor, AuditContext};
use kihon4_core::entities::customers;
use kihon4_core::import::{Encoding, ImportError, Rejection, Summary, import};
use kihon4_test_support::both;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

both!(
    every_row_is_checked_and_the_good_ones_imported_once,
    shift_jis_and_utf8_with_bom_read_alike,
    a_file_with_an_unknown_column_is_refused_whole,
    cells_with_hidden_my_numbers_or_spoofing_characters_are_refused,
);

async fn run(app: &TestApp, csv: &[u8], encoding: Encoding) -> (Summary, Vec<Rejection>) {
    let mut rejected = Vec::new();
    let summary = import(
        &app.db,
        &AuditContext::new(Actor::cli(), None),
        csv,
        encoding,
        |_| {},
        |r| rejected.push(r),
    )
    .await
    .unwrap();
    (summary, rejected)
}

async fn every_row_is_checked_and_the_good_ones_imported_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let csv = "external_ref,email,locale,name,address,birth_date,gender\n\
        IMP-1,imp1@example.jp,ja,山田太郎,東京都千代田区千代田1-1,1980-02-17,1\n\
        IMP-2,imp2@example.jp,en,,,,\n\
        IMP-3,imp3@example.jp,ja,佐藤花子,大阪府大阪市北区梅田1-1,1980-02-30,2\n\
        IMP-4,imp4@example.jp,ja,鈴木一郎 123456789018,東京都港区芝公園4-2-8,1975-05-05,1\n\
        IMP-1,other@example.jp,ja,,,,\n\
        IMP-5,not-an-email,ja,,,,\n\
        IMP-6,imp6@example.jp,ja,高橋次郎,,,\n\
        IMP-7,imp7@example.jp\n\
        IMP-8,imp8@example.jp,fr,,,,\n";
    let (summary, rejected) = run(&app, csv.as_bytes(), Encoding::Utf8).await;
    assert_eq!(
        summary,
        Summary {
            rows: 9,
            created: 2,
            updated: 0,
            unchanged: 0,
            rejected: 7
        }
    );
    let lines: Vec<u64> = rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, [4, 5, 6, 7, 8, 9, 10]);
    let reason = |line: u64| {
        rejected
            .iter()
            .find(|r| r.line == line)
            .unwrap()
            .reason
            .clone()
    };
    assert!(reason(4).starts_with("birth_date"), "{}", reason(4));
    assert!(reason(5).contains("My Number"), "{}", reason(5));
    assert_eq!(reason(6), "external_ref: the same as on line 2");
    assert!(reason(7).starts_with("email"), "{}", reason(7));
    assert!(reason(8).contains("address"), "{}", reason(8));
    assert!(reason(9).contains("columns"), "{}", reason(9));
    assert!(reason(10).starts_with("locale"), "{}", reason(10));
    // No reason repeats what the row held.
    for r in &rejected {
        for value in ["佐藤", "123456789018", "not-an-email", "高橋"] {
            assert!(!r.reason.contains(value), "{}", r.reason);
        }
    }
    let found: Value = app
        .get("/v1/customers?external_ref=IMP-1", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let first = &found["items"][0];
    assert_eq!(first["basic4"]["name"], "山田太郎");
    let id = first["id"].as_str().unwrap();
    let history: Value = app
        .get(&format!("/v1/customers/{id}/history"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["items"][0]["source"], "import");
    assert_eq!(app.count_events("customer.created").await, 2);

    // Again, with one email changed and the four items for IMP-2: only those
    // two rows write anything.
    let events = app.assert_chain_verifies().await;
    let again = "external_ref,email,locale,name,address,birth_date,gender\n\
        IMP-1,imp1-new@example.jp,ja,山田太郎,東京都千代田区千代田1-1,1980-02-17,1\n\
        IMP-2,imp2@example.jp,en,伊藤四郎,北海道札幌市中央区北1条西2丁目,1990-10-10,1\n";
    let (summary, _) = run(&app, again.as_bytes(), Encoding::Utf8).await;
    assert_eq!(
        (summary.updated, summary.unchanged, summary.created),
        (2, 0, 0)
    );
    assert_eq!(app.assert_chain_verifies().await, events + 2);
    let (summary, _) = run(&app, again.as_bytes(), Encoding::Utf8).await;
    assert_eq!(
        (summary.updated, summary.unchanged, summary.created),
        (0, 2, 0)
    );
    assert_eq!(
        app.assert_chain_verifies().await,
        events + 2,
        "nothing written"
    );
    // The four items a customer has are not overwritten by a file.
    let changed = "external_ref,email,locale,name,address,birth_date,gender\n\
        IMP-1,imp1-new@example.jp,ja,山田一郎,東京都千代田区千代田1-1,1980-02-17,1\n";
    let (summary, _) = run(&app, changed.as_bytes(), Encoding::Utf8).await;
    assert_eq!(summary.unchanged, 1);
}

async fn shift_jis_and_utf8_with_bom_read_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let text = "external_ref,email,name,address,birth_date,gender\r\n\
        SJIS-1,sjis1@example.jp,渡辺髙子,神奈川県横浜市中区日本大通1,1985-03-03,2\r\n";
    let (sjis, _, lossy) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(!lossy, "髙 is in CP932");
    let (summary, rejected) = run(&app, &sjis, Encoding::ShiftJis).await;
    assert_eq!(summary.created, 1, "{rejected:?}");
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(text.replace("SJIS-1", "BOM-1").as_bytes());
    let (summary, rejected) = run(&app, &bom, Encoding::Utf8).await;
    assert_eq!(summary.created, 1, "{rejected:?}");
    for r in ["SJIS-1", "BOM-1"] {
        let found: Value = app
            .get(&format!("/v1/customers?external_ref={r}"), &app.operator())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(found["items"][0]["basic4"]["name"], "渡辺髙子");
    }
    // Shift_JIS read as UTF-8: the row is refused, not imported garbled.
    let (summary, rejected) = run(&app, &sjis, Encoding::Utf8).await;
    assert_eq!(summary.rejected, 1);
    assert!(rejected[0].reason.contains("encoding"), "{rejected:?}");
}

async fn a_file_with_an_unknown_column_is_refused_whole(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for header in [
        "external_ref,email,my_number\n",
        "external_ref,locale\n",
        "external_ref,email,email\n",
    ] {
        let csv = format!("{header}X-1,x@example.jp,1\n");
        let err = import(
            &app.db,
            &AuditContext::new(Actor::cli(), None),
            csv.as_bytes(),
            Encoding::Utf8,
            |_| {},
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ImportError::Header(_)), "{err}");
    }
    assert_eq!(app.count(customers::Entity).await, 0);
}

/// A My Number in any spelling, or a control, bidirectional or format
/// character, in any cell: the row refused (naming the column for the
/// latter), nothing written.
async fn cells_with_hidden_my_numbers_or_spoofing_characters_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let csv = "external_ref,email,locale,name,address,birth_date,gender\n\
        HID-1,hid1@example.jp,ja,山田太郎,東京都千代田区3141.5926.5352,1980-02-17,1\n\
        HID-2,hid2@example.jp,ja,山田\u{200B}三一四一五九二六五三五二,東京都港区1-1,1980-02-17,1\n\
        HID-3,hid3@example.jp,ja,山田太郎,東京都港区٣١٤١٥٩٢٦٥٣٥٢,1980-02-17,1\n\
        HID-4,hid4@example.jp,ja,山田\u{202E}太郎,東京都港区1-1,1980-02-17,1\n\
        HID-5,hid5@example.jp,ja,山田太郎,東京都\u{2028}港区1-1,1980-02-17,1\n\
        HID-6,hid6\u{FEFF}@example.jp,ja,山田太郎,東京都港区1-1,1980-02-17,1\n\
        HID-7,hid7@example.jp,ja,山田太郎,東京都港区1-1,1980-02-17,1\n";
    let (summary, rejected) = run(&app, csv.as_bytes(), Encoding::Utf8).await;
    assert_eq!((summary.created, summary.rejected), (1, 6));
    let reasons: Vec<(u64, String)> = rejected
        .iter()
        .map(|r| (r.line, r.reason.clone()))
        .collect();
    for (line, reason) in &reasons[..3] {
        assert!(reason.contains("My Number"), "line {line}: {reason}");
    }
    assert!(
        reasons[3].1.starts_with("name:") && reasons[3].1.contains("U+202E"),
        "{:?}",
        reasons[3]
    );
    assert!(
        reasons[4].1.starts_with("address:") && reasons[4].1.contains("U+2028"),
        "{:?}",
        reasons[4]
    );
    assert!(
        reasons[5].1.starts_with("email:") && reasons[5].1.contains("U+FEFF"),
        "{:?}",
        reasons[5]
    );
    assert_eq!(
        reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6, 7]
    );
    assert_eq!(app.count(customers::Entity).await, 1);
}
