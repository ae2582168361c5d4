//! Synthetic residents and life events in bulk, for load tests: plausible
//! Japanese names and addresses across all 47 prefectures, made from a seed
//! so that a run can be repeated; certificates are issued lazily.

use chrono::{Duration, NaiveDate, Utc};
use kihon4_core::domain::{Basic4, RawBasic4};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::municipality::PREFECTURES;
use crate::store::{IssuedCertificate, Person};

/// Each prefecture's capital, in the order of [`PREFECTURES`].
const CAPITALS: [&str; 47] = [
    "札幌市",
    "青森市",
    "盛岡市",
    "仙台市",
    "秋田市",
    "山形市",
    "福島市",
    "水戸市",
    "宇都宮市",
    "前橋市",
    "さいたま市",
    "千葉市",
    "新宿区",
    "横浜市",
    "新潟市",
    "富山市",
    "金沢市",
    "福井市",
    "甲府市",
    "長野市",
    "岐阜市",
    "静岡市",
    "名古屋市",
    "津市",
    "大津市",
    "京都市",
    "大阪市",
    "神戸市",
    "奈良市",
    "和歌山市",
    "鳥取市",
    "松江市",
    "岡山市",
    "広島市",
    "山口市",
    "徳島市",
    "高松市",
    "松山市",
    "高知市",
    "福岡市",
    "佐賀市",
    "長崎市",
    "熊本市",
    "大分市",
    "宮崎市",
    "鹿児島市",
    "那覇市",
];

const SURNAMES: [&str; 24] = [
    "佐藤",
    "鈴木",
    "高橋",
    "田中",
    "伊藤",
    "渡辺",
    "山本",
    "中村",
    "小林",
    "加藤",
    "吉田",
    "山田",
    "佐々木",
    "山口",
    "松本",
    "井上",
    "木村",
    "林",
    "斎藤",
    "清水",
    "山崎",
    "森",
    "池田",
    "橋本",
];
const MALE_NAMES: [&str; 12] = [
    "太郎", "一郎", "健", "翔太", "大輔", "拓也", "浩", "誠", "蓮", "悠真", "湊", "陽翔",
];
const FEMALE_NAMES: [&str; 12] = [
    "花子",
    "陽子",
    "美咲",
    "さくら",
    "愛",
    "結衣",
    "恵",
    "由美",
    "陽葵",
    "凛",
    "芽依",
    "葵",
];
const TOWNS: [&str; 10] = [
    "本町", "中央", "栄町", "緑町", "旭町", "若葉", "桜台", "東町", "西町", "南町",
];

/// The register's synthetic population: deterministic for a seed.
pub struct Population {
    rng: StdRng,
    /// Ids and serials count up from a seeded start, so that a load of a
    /// million appends to the database's indexes instead of scattering.
    id_prefix: u64,
    serial_base: u128,
    counter: u64,
}

impl Population {
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let id_prefix = rng.r#gen();
        // 72 bits with a non-zero, positive top byte: room for 2^64 serials after it.
        let serial_base =
            (u128::from(rng.gen_range(1u8..=0x7f)) << 64) | u128::from(rng.r#gen::<u32>()) << 32;
        Self {
            rng,
            id_prefix,
            serial_base,
            counter: 0,
        }
    }

    /// An address in a random prefecture's capital.
    pub fn address(&mut self) -> String {
        let p = self.rng.gen_range(0..PREFECTURES.len());
        format!(
            "{}{}{}{}丁目{}番{}号",
            PREFECTURES[p],
            CAPITALS[p],
            TOWNS.choose(&mut self.rng).expect("not empty"),
            self.rng.gen_range(1..=5),
            self.rng.gen_range(1..=30),
            self.rng.gen_range(1..=20)
        )
    }

    pub fn basic4(&mut self) -> Basic4 {
        let female = self.rng.gen_bool(0.5);
        let given = if female {
            FEMALE_NAMES.choose(&mut self.rng)
        } else {
            MALE_NAMES.choose(&mut self.rng)
        };
        let name = format!(
            "{} {}",
            SURNAMES.choose(&mut self.rng).expect("not empty"),
            given.expect("not empty")
        );
        let start = NaiveDate::from_ymd_opt(1930, 1, 1).expect("a date");
        let birth = start + Duration::days(self.rng.gen_range(0..(76 * 365)));
        let address = self.address();
        Basic4::parse(RawBasic4 {
            name: Some(&name),
            address: Some(&address),
            birth_date: Some(&birth.to_string()),
            gender: Some(if female { "2" } else { "1" }),
            ..Default::default()
        })
        .expect("synthetic residents are valid")
    }

    /// A new surname, for a rename.
    pub fn renamed(&mut self, name: &str) -> String {
        let given = name.split(' ').nth(1).unwrap_or("花子");
        let surname = SURNAMES
            .iter()
            .copied()
            .filter(|s| !name.starts_with(s))
            .collect::<Vec<_>>();
        format!(
            "{} {given}",
            surname.choose(&mut self.rng).expect("not empty")
        )
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub fn id(&mut self) -> String {
        let n = self.next();
        uuid::Uuid::from_u64_pair(self.id_prefix, n).to_string()
    }

    pub fn serial(&mut self) -> kihon4_core::domain::CertSerial {
        let n = self.next();
        let value = self.serial_base + u128::from(n);
        kihon4_core::domain::CertSerial::parse(&format!("{value:x}")).expect("a positive serial")
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        items.shuffle(&mut self.rng);
    }

    /// A resident and their (lazy) certificate.
    pub fn resident(&mut self) -> (Person, IssuedCertificate) {
        let basic4 = self.basic4();
        let person = Person {
            id: self.id(),
            partition: crate::municipality::of_address(basic4.address.as_str()),
            basic4,
            extras: Default::default(),
            deceased: false,
        };
        let cert = crate::residents::lazy(
            &person.id,
            &person.basic4,
            &person.partition,
            Utc::now(),
            self.serial(),
        );
        (person, cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_makes_the_same_population() {
        let (a, b) = (Population::new(7).resident(), Population::new(7).resident());
        assert_eq!(a.0.id, b.0.id);
        assert_eq!(a.0.basic4, b.0.basic4);
        assert_eq!(a.1.serial, b.1.serial);
        assert_ne!(Population::new(8).resident().0.id, a.0.id);
    }

    #[test]
    fn residents_are_spread_over_the_prefectures() {
        let mut p = Population::new(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let (person, _) = p.resident();
            assert_ne!(
                person.partition.city,
                "不明",
                "{}",
                person.basic4.address.as_str()
            );
            seen.insert(person.partition.prefecture);
        }
        assert_eq!(seen.len(), 47);
    }
}
