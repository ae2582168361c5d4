//! Which municipality an address is in: the simulator's CRL partitions
//! follow municipalities, as J-LIS's do.

use kihon4_core::jpki::CrlPartition;

pub const PREFECTURES: [&str; 47] = [
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

/// The prefecture and city (市, Tokyo's 区, or 町/村) an address starts with;
/// `不明` for what cannot be told.
pub fn of_address(address: &str) -> CrlPartition {
    let unknown = || "不明".to_owned();
    let Some(prefecture) = PREFECTURES.iter().find(|p| address.starts_with(*p)) else {
        return CrlPartition {
            prefecture: unknown(),
            city: unknown(),
        };
    };
    let rest = &address[prefecture.len()..];
    // A county (郡) is followed by its town or village.
    let after_county = rest.find('郡').map(|i| i + '郡'.len_utf8()).unwrap_or(0);
    let city = rest[after_county..]
        .char_indices()
        .find(|(_, c)| matches!(c, '市' | '区' | '町' | '村'))
        .map(|(i, c)| rest[..after_county + i + c.len_utf8()].to_owned())
        .unwrap_or_else(unknown);
    CrlPartition {
        prefecture: (*prefecture).to_owned(),
        city,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(address: &str) -> (String, String) {
        let m = of_address(address);
        (m.prefecture, m.city)
    }

    #[test]
    fn finds_prefecture_and_city() {
        assert_eq!(
            p("東京都千代田区霞が関1-1-1"),
            ("東京都".into(), "千代田区".into())
        );
        assert_eq!(p("京都府京都市左京区1"), ("京都府".into(), "京都市".into()));
        assert_eq!(
            p("大阪府大阪市北区梅田1-1"),
            ("大阪府".into(), "大阪市".into())
        );
        assert_eq!(
            p("北海道虻田郡倶知安町1"),
            ("北海道".into(), "虻田郡倶知安町".into())
        );
        assert_eq!(
            p("神奈川県横浜市中区1"),
            ("神奈川県".into(), "横浜市".into())
        );
        assert_eq!(p("Somewhere"), ("不明".into(), "不明".into()));
    }
}
