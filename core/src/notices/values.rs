//! How much of the changed values a change notice shows
//! (`KIHON4_NOTICE_VALUES`). Email crosses the internet, and TLS between
//! mail servers is opportunistic: by default a notice names the items that
//! changed and shows the new address only down to its municipality.

use std::str::FromStr;

use serde_json::Value;

/// How much of each changed value a change notice shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoticeValues {
    /// Only the names of the items that changed.
    None,
    /// The names, and of a new address its prefecture and municipality.
    #[default]
    Municipality,
    /// Every new value in full.
    Full,
}

impl NoticeValues {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Municipality => "municipality",
            Self::Full => "full",
        }
    }
}

impl FromStr for NoticeValues {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "municipality" => Ok(Self::Municipality),
            "full" => Ok(Self::Full),
            other => Err(format!(
                "must be `none`, `municipality` or `full`, not `{other}`"
            )),
        }
    }
}

/// Items whose new value tells who the customer now is; while they are
/// hidden, the notice does not greet the customer by the new name either.
const NAMING_ITEMS: [&str; 3] = ["name", "name_kana", "former_surname"];

/// Cuts the `changes` of a change notice (each `{"item", "label", "value"}`)
/// down to what `values` shows: `value` becomes what may be shown (empty
/// when nothing), `partial` whether it was cut short. Returns whether any
/// naming item's value is hidden.
pub fn restrict(values: NoticeValues, changes: &mut Value) -> bool {
    let mut naming_hidden = false;
    let Some(items) = changes.as_array_mut() else {
        return false;
    };
    for change in items {
        let Some(change) = change.as_object_mut() else {
            continue;
        };
        let item = change
            .get("item")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let value = change
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (shown, partial) = match (values, item.as_str()) {
            (NoticeValues::Full, _) => (value, false),
            (NoticeValues::Municipality, "address") => match municipality(&value) {
                Some(m) if m.len() < value.trim().len() => (m.to_owned(), true),
                Some(m) => (m.to_owned(), false),
                None => (String::new(), false),
            },
            _ => (String::new(), false),
        };
        if shown.is_empty() && NAMING_ITEMS.contains(&item.as_str()) {
            naming_hidden = true;
        }
        change.insert("value".into(), Value::String(shown));
        change.insert("partial".into(), Value::Bool(partial));
    }
    naming_hidden
}

const PREFECTURES: [&str; 47] = [
    "北海道",
    "青森県",
    "岩手県",
    "宮城県",
    "秋田県",
    "山形県",
    "福島県",
    "茨城県",
    "栃木県",
    "群馬県",
    "埼玉県",
    "千葉県",
    "東京都",
    "神奈川県",
    "新潟県",
    "富山県",
    "石川県",
    "福井県",
    "山梨県",
    "長野県",
    "岐阜県",
    "静岡県",
    "愛知県",
    "三重県",
    "滋賀県",
    "京都府",
    "大阪府",
    "兵庫県",
    "奈良県",
    "和歌山県",
    "鳥取県",
    "島根県",
    "岡山県",
    "広島県",
    "山口県",
    "徳島県",
    "香川県",
    "愛媛県",
    "高知県",
    "福岡県",
    "佐賀県",
    "長崎県",
    "熊本県",
    "大分県",
    "宮崎県",
    "鹿児島県",
    "沖縄県",
];

/// The designated cities (政令指定都市), whose wards (区) are part of the
/// municipality in an address.
const DESIGNATED_CITIES: [&str; 20] = [
    "札幌市",
    "仙台市",
    "さいたま市",
    "千葉市",
    "横浜市",
    "川崎市",
    "相模原市",
    "新潟市",
    "静岡市",
    "浜松市",
    "名古屋市",
    "京都市",
    "大阪市",
    "堺市",
    "神戸市",
    "岡山市",
    "広島市",
    "北九州市",
    "福岡市",
    "熊本市",
];

const SUFFIXES: [char; 4] = ['市', '区', '町', '村'];

/// A Japanese address down to its municipality: the prefecture, then a
/// city (with its ward in a designated city), a special ward of Tokyo, or a
/// district's (郡) town or village. `None` when the address does not begin
/// with a prefecture or no municipality can be found after it: then nothing
/// of it is shown.
pub fn municipality(address: &str) -> Option<&str> {
    let address = address.trim();
    let prefecture = PREFECTURES.iter().find(|p| address.starts_with(*p))?;
    let rest = &address[prefecture.len()..];
    let chars: Vec<char> = rest.chars().collect();
    // The first of `suffixes` at `from` or later.
    let find = |from: usize, suffixes: &[char]| {
        (from..chars.len()).find(|&i| suffixes.contains(&chars[i]))
    };
    // A run of suffixes is one name's end: 四日市市, 大町町, 余市町, 十日町市.
    let run_end = |mut i: usize| {
        while chars
            .get(i + 1)
            .is_some_and(|c| matches!(c, '市' | '町' | '村'))
        {
            i += 1;
        }
        i
    };
    // A district (郡) is followed by a town or village (a name ending in 町
    // or 村); a city whose name holds 郡 (大和郡山市) is not one.
    let district_town = (1..chars.len())
        .find(|&i| chars[i] == '郡')
        .and_then(|g| find(g + 2, &['市', '町', '村']))
        .map(run_end)
        .filter(|&end| chars[end] != '市');
    let cut = match district_town {
        Some(end) => end,
        None => {
            let first = find(1, &SUFFIXES)?;
            let mut cut = if chars[first] == '区' {
                first
            } else {
                run_end(first)
            };
            // A city whose name holds 村 or 町 (東村山市, 武蔵村山市).
            if cut == first
                && matches!(chars[cut], '町' | '村')
                && chars.get(cut + 2) == Some(&'市')
            {
                cut += 2;
            }
            let city: String = chars[..=cut].iter().collect();
            if DESIGNATED_CITIES.contains(&city.as_str())
                && let Some(ward) = find(cut + 2, &['区']).filter(|&w| w <= cut + 6)
            {
                cut = ward;
            }
            cut
        }
    };
    let bytes: usize = chars[..=cut].iter().map(|c| c.len_utf8()).sum();
    Some(&address[..prefecture.len() + bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_cut_after_their_municipality() {
        let cases = [
            ("東京都千代田区千代田1-1", Some("東京都千代田区")),
            (
                "東京都八王子市元本郷町三丁目24番1号",
                Some("東京都八王子市"),
            ),
            ("東京都町田市森野2-2-22", Some("東京都町田市")),
            ("東京都東村山市本町1-2-3", Some("東京都東村山市")),
            (
                "東京都西多摩郡奥多摩町氷川215-6",
                Some("東京都西多摩郡奥多摩町"),
            ),
            ("神奈川県横浜市中区港町1-1", Some("神奈川県横浜市中区")),
            ("大阪府大阪市北区中之島1-3-20", Some("大阪府大阪市北区")),
            ("北海道札幌市中央区北1条西2丁目", Some("北海道札幌市中央区")),
            ("北海道余市郡余市町朝日町26", Some("北海道余市郡余市町")),
            ("山形県西村山郡河北町谷地戊81", Some("山形県西村山郡河北町")),
            (
                "宮城県柴田郡村田町大字村田字迫85",
                Some("宮城県柴田郡村田町"),
            ),
            ("佐賀県杵島郡大町町大字大町5017", Some("佐賀県杵島郡大町町")),
            ("福島県郡山市朝日1-23-7", Some("福島県郡山市")),
            ("奈良県大和郡山市北郡山町248-4", Some("奈良県大和郡山市")),
            ("三重県四日市市諏訪町1-5", Some("三重県四日市市")),
            ("新潟県十日町市千歳町3-3", Some("新潟県十日町市")),
            ("長野県大町市大町3887", Some("長野県大町市")),
            ("三重県津市西丸之内23-1", Some("三重県津市")),
            ("千葉県市川市八幡1-1-1", Some("千葉県市川市")),
            (
                "京都府京都市中京区寺町通御池上る",
                Some("京都府京都市中京区"),
            ),
            ("東京都三宅島三宅村阿古497", Some("東京都三宅島三宅村")),
            (
                "沖縄県島尻郡渡嘉敷村字渡嘉敷183",
                Some("沖縄県島尻郡渡嘉敷村"),
            ),
            // Nothing to cut at: nothing is shown.
            ("千代田区千代田1-1", None),
            ("東京都", None),
            ("Somewhere 1-2-3", None),
            ("", None),
        ];
        for (address, expected) in cases {
            assert_eq!(municipality(address), expected, "{address}");
        }
    }

    #[test]
    fn values_are_restricted_as_set() {
        let changes = serde_json::json!([
            {"item": "name", "label": "氏名", "value": "山田花子"},
            {"item": "address", "label": "住所", "value": "神奈川県横浜市中区港町1-1"},
            {"item": "birth_date", "label": "生年月日", "value": "1990年1月2日"},
        ]);
        let mut full = changes.clone();
        assert!(!restrict(NoticeValues::Full, &mut full));
        assert_eq!(full[1]["value"], "神奈川県横浜市中区港町1-1");
        assert_eq!(full[1]["partial"], false);
        let mut municipality = changes.clone();
        assert!(restrict(NoticeValues::Municipality, &mut municipality));
        assert_eq!(municipality[0]["value"], "");
        assert_eq!(municipality[1]["value"], "神奈川県横浜市中区");
        assert_eq!(municipality[1]["partial"], true);
        assert_eq!(municipality[2]["value"], "");
        let mut none = changes;
        assert!(restrict(NoticeValues::None, &mut none));
        assert!(none.as_array().unwrap().iter().all(|c| c["value"] == ""));
    }

    fn notices(values: NoticeValues) -> crate::notices::Notices {
        crate::notices::Notices::load(
            crate::notices::Institution {
                name: "かもめ銀行".into(),
                ..Default::default()
            },
            crate::notices::Sender {
                address: "notices@bank.example.jp",
                reply_to: None,
                timezone: chrono_tz::Asia::Tokyo,
            },
            None,
        )
        .unwrap()
        .with_values(values)
    }

    fn rendered(values: NoticeValues, locale: crate::domain::Locale) -> (String, String) {
        use crate::notices::templates::item_label;
        let changes = serde_json::json!([
            {"item": "name", "label": item_label(locale, "name"), "value": "佐々木花子"},
            {"item": "address", "label": item_label(locale, "address"), "value": "北海道余市郡余市町朝日町26"},
            {"item": "birth_date", "label": item_label(locale, "birth_date"), "value": "1990年1月2日"},
        ]);
        let r = notices(values)
            .render(
                crate::notices::NoticeKind::Basic4Changed,
                locale,
                Some("佐々木花子"),
                serde_json::json!({"changes": changes, "reported_on": "2026年12月1日"}),
            )
            .unwrap();
        (r.text, r.html)
    }

    #[test]
    fn change_notices_show_what_the_setting_allows() {
        use crate::domain::Locale::{En, Ja};
        // municipality (the default): the address down to its town, no new name or date.
        let (text, html) = rendered(NoticeValues::Municipality, Ja);
        assert!(text.starts_with("お客さま\n"), "{text}");
        assert!(
            text.contains("・氏名\n・住所：北海道余市郡余市町（以下省略）\n・生年月日\n"),
            "{text}"
        );
        assert!(text.contains("このメールには更新後の内容をすべては記載していません。"));
        assert!(
            html.contains("<dd>北海道余市郡余市町（以下省略）</dd>"),
            "{html}"
        );
        let (text, html) = rendered(NoticeValues::Municipality, En);
        assert!(text.starts_with("Dear customer,"), "{text}");
        assert!(
            text.contains(
                "- Name\n- Address: 北海道余市郡余市町 (the rest is not shown)\n- Date of birth\n"
            ),
            "{text}"
        );
        assert!(text.contains("this email does not show all of the updated details"));
        assert!(
            html.contains("<dd>北海道余市郡余市町 (the rest is not shown)</dd>"),
            "{html}"
        );
        // none: only the names of the items.
        let (text, html) = rendered(NoticeValues::None, Ja);
        assert!(text.contains("・氏名\n・住所\n・生年月日\n"), "{text}");
        assert!(!html.contains("<dd>"), "{html}");
        let (text, _) = rendered(NoticeValues::None, En);
        assert!(
            text.contains("- Name\n- Address\n- Date of birth\n"),
            "{text}"
        );
        // full: everything, as before.
        let (text, html) = rendered(NoticeValues::Full, Ja);
        assert!(text.starts_with("佐々木花子 様"), "{text}");
        assert!(
            text.contains("・住所：北海道余市郡余市町朝日町26\n"),
            "{text}"
        );
        assert!(text.contains("・生年月日：1990年1月2日"));
        assert!(!text.contains("すべては記載していません"));
        assert!(html.contains("<dd>佐々木花子</dd>"));
        let (text, _) = rendered(NoticeValues::Full, En);
        assert!(
            text.contains("- Address: 北海道余市郡余市町朝日町26\n"),
            "{text}"
        );
        assert!(!text.contains("does not show"));
        // Nothing of the personal values leaks where they are withheld.
        for values in [NoticeValues::None, NoticeValues::Municipality] {
            for locale in [Ja, En] {
                let (text, html) = rendered(values, locale);
                for secret in ["佐々木", "朝日町", "1990"] {
                    assert!(!text.contains(secret) && !html.contains(secret), "{secret}");
                }
            }
        }
    }

    #[test]
    fn an_address_that_cannot_be_cut_is_not_shown() {
        let mut changes = serde_json::json!([
            {"item": "address", "label": "住所", "value": "どこか遠く1-2-3"},
        ]);
        restrict(NoticeValues::Municipality, &mut changes);
        assert_eq!(changes[0]["value"], "");
        assert_eq!(changes[0]["partial"], false);
    }
}
