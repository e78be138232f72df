//! The vocabularies generated records draw from, modelled on the real sample export.

/// Blast titles; one carries a typographic apostrophe like the sample's "Today’s …".
pub(crate) const BLAST_TITLES: &[&str] = &[
    "How To Sell Your Handmade Cards",
    "Today’s Collectibles Roundup",
    "18 Beautiful, Colorful Spring Gardens",
    "DIY of the Week: 17 Ways to Refresh a Small Bathroom",
    "Why Do Cut Apples Turn Brown?",
    "Quinoa, Three Ways",
    "10 Yoga Poses That Will Tone Your Abs",
    "Get Paid to Travel (Seriously!)",
    "Change Your Luck",
    "The 15 Types of Cancer Caused by Smoking",
    "Quiz: How Fit Are You?",
    "6 Major Minerals Your Body Needs the Most",
];

/// Blast channels (the part after the dash).
pub(crate) const BLAST_CHANNELS: &[&str] = &[
    "Arts & Crafts Newsletter",
    "Collectibles Channel Newsletter",
    "Gardening Newsletter",
    "Home Channel Newsletter",
    "Food Channel Newsletter",
    "Travel Channel Newsletter",
    " Recipe of the Day Newsletter",
    " Computers Channel Newsletter",
    "Living Healthy",
    "Small Business Channel NL",
    "Health Tip of the Day",
    "Espanol Channel Newsletter",
];

/// Devices seen on opened or clicked messages.
pub(crate) const DEVICES: &[&str] = &[
    "Chrome",
    "Firefox",
    "Internet Explorer",
    "iPhone",
    "Windows Phone",
    "Gmail",
    "Android",
    "iPad",
    "Safari",
];

/// Click URLs.
pub(crate) const URLS: &[&str] = &[
    "http://li.example.com/click",
    "http://www.example.com/food/quinoa-three-ways",
    "http://www.example.com/travel/trending?utm_source=sailthru&utm_medium=email",
    "http://www.example.com/home/small-bathroom-refresh",
    "http://www.example.com/unsubscribe",
];

/// Transactional templates.
pub(crate) const TEMPLATES: &[&str] = &[
    "Home BX Welcome",
    "ROD BX Welcome",
    "Travel BX Welcome",
    "HTD BX Welcome",
    "Food BX Welcome",
    "Password Reset",
];

/// Browser names for `profile.browser`.
pub(crate) const BROWSERS: &[&str] = &[
    "Chrome",
    "Android",
    "iPad",
    "iPhone",
    "Safari",
    "Firefox",
    "Internet Explorer",
    "Edge",
];

/// Countries for `profile.geo.country`.
pub(crate) const COUNTRIES: &[&str] = &["US", "CA", "GB"];

/// States for `profile.geo.state`: (label, index into [`COUNTRIES`]).
pub(crate) const STATES: &[(&str, u8)] = &[
    ("NY US", 0),
    ("CT US", 0),
    ("NJ US", 0),
    ("TX US", 0),
    ("CA US", 0),
    ("FL US", 0),
    ("SC US", 0),
    ("UT US", 0),
    ("TN US", 0),
    ("MA US", 0),
    ("PA US", 0),
    ("ON CA", 1),
    ("H9 GB", 2),
];

/// Cities for `profile.geo.city`: (label, index into [`STATES`], zip label). Zips are
/// unique, so one zip per chosen city never repeats a key.
pub(crate) const CITIES: &[(&str, u8, &str)] = &[
    ("Brooklyn, NY US", 0, "11217 US"),
    ("New York, NY US", 0, "10011 US"),
    ("Syosset, NY US", 0, "11791 US"),
    ("Fairfield, CT US", 1, "06824 US"),
    ("Waterford, CT US", 1, "06385 US"),
    ("Uncasville, CT US", 1, "06382 US"),
    ("Jersey City, NJ US", 2, "07310 US"),
    ("Tenafly, NJ US", 2, "07670 US"),
    ("San Antonio, TX US", 3, "78205 US"),
    ("Alhambra, CA US", 4, "91801 US"),
    ("Irvine, CA US", 4, "92619 US"),
    ("Bradenton, FL US", 5, "34209 US"),
    ("Johns Island, SC US", 6, "29455 US"),
    ("Park City, UT US", 7, "84060 US"),
    ("Nashville, TN US", 8, "37203 US"),
    ("East Longmeadow, MA US", 9, "01028 US"),
    ("Jenkintown, PA US", 10, "19046 US"),
    ("Toronto, ON CA", 11, "M5V CA"),
    ("London, H9 GB", 12, "EC1A GB"),
];

/// Ordinary list names for `profile.lists_signup`.
pub(crate) const LISTS: &[&str] = &[
    "Master List",
    "Today Group 2",
    "Lobby",
    "Food A/B Test",
    "Travel8/7 Group4",
    "AT Persado Control Group",
    "Health Recipients - 7/21",
    "teen list",
    "entertainment combine",
    "list_golfequipment",
    "ROD1015",
    "ROD10_15",
    "homepin9_25(Group1)",
    "Staying Active - One Time",
    "LiveIntentTest",
    "AT 7/23 Non-openers",
    "Template Testing - Home",
    "Belsomra Full List",
];

/// List names that differ only by case, as in the sample.
pub(crate) const CASE_LISTS: &[&str] = &["Jess Delta Test", "Jess delta test", "jess delta test"];

/// What kind of value a custom var holds.
#[derive(Clone, Copy)]
pub(crate) enum VarKind {
    /// `"1"`
    StrOne,
    /// `1`
    IntOne,
    /// `null`
    Null,
    /// `true` / `false`
    Bool,
    /// `""`
    Empty,
    /// A word from [`SOURCES`].
    Source,
    /// A small integer.
    Count,
}

/// Custom vars for `profile.vars` (`Group`/`group` are added separately, as a pair).
pub(crate) const VARS: &[(&str, VarKind)] = &[
    ("Opt_Back_In", VarKind::Empty),
    ("artcraftsl", VarKind::StrOne),
    ("booksl", VarKind::IntOne),
    ("bookssl", VarKind::Null),
    ("source", VarKind::Source),
    ("welcome_received", VarKind::Bool),
    ("diabetes_ov", VarKind::IntOne),
    ("eathealthsl", VarKind::Null),
    ("list_running", VarKind::StrOne),
    ("list_lobby", VarKind::IntOne),
    ("travelgetsl", VarKind::StrOne),
    ("signup_count", VarKind::Count),
];

/// Values of the `source` var.
pub(crate) const SOURCES: &[&str] = &["etiquette", "facebook", "homepage", "quiz", "import"];

/// Opt-out reasons.
pub(crate) const OPTOUT_REASONS: &[&str] = &["basic", "all", "blast"];

/// First names for e-mail addresses.
pub(crate) const FIRST_NAMES: &[&str] = &[
    "alex", "sam", "maria", "li", "noor", "jo", "kim", "ana", "tom", "eva",
];

/// Last names for e-mail addresses.
pub(crate) const LAST_NAMES: &[&str] = &[
    "smith", "garcia", "chen", "khan", "muller", "rossi", "silva", "kowalski",
];
