//! The words of the deferred-initiation pages (the shopper chooses the bank, or gives their
//! IBAN, on pisgate's page) in the consent page's five languages.

use crate::domain::Language;

/// Every sentence of the bank-choice and IBAN pages, in one language.
pub struct ChoiceText {
    pub choose_title: &'static str,
    pub choose_intro: &'static str,
    /// The group of bank buttons.
    pub choose_legend: &'static str,
    pub iban_title: &'static str,
    /// Followed by the bank's name.
    pub iban_intro: &'static str,
    pub iban_label: &'static str,
    pub iban_hint: &'static str,
    pub continue_label: &'static str,
    /// The IBAN field's errors: empty, bad characters, unknown or non-SEPA country, wrong
    /// length for its country, wrong check digits.
    pub iban_empty: &'static str,
    pub iban_characters: &'static str,
    pub iban_country: &'static str,
    pub iban_length: &'static str,
    pub iban_checksum: &'static str,
    /// An IBAN of another country than the payment's (the merchant's own rule for a debtor
    /// account it names), or the very account being paid.
    pub iban_not_payment_country: &'static str,
    pub iban_same_as_creditor: &'static str,
    /// The page after a bank call with no usable answer.
    pub retry: (&'static str, &'static str),
    /// Another submit's bank call is still running.
    pub busy: (&'static str, &'static str),
    /// A bank call with no usable answer at a bank that may execute a payment without the
    /// shopper: it may have been made, so nothing is sent again.
    pub unresolved: (&'static str, &'static str),
    pub try_again: &'static str,
    /// The error summary's heading.
    pub error_heading: &'static str,
}

const EN: ChoiceText = ChoiceText {
    choose_title: "Choose your bank",
    choose_intro: "Choose the bank where you approve this payment.",
    choose_legend: "Banks",
    iban_title: "Your account",
    iban_intro: "Enter the IBAN of the account you pay from. You approve the payment at",
    iban_label: "IBAN",
    iban_hint: "For example FI21 1234 5600 0007 85. Spaces are fine.",
    continue_label: "Continue",
    iban_empty: "Enter your IBAN.",
    iban_characters: "The IBAN may contain only letters, digits and spaces.",
    iban_country: "The IBAN must start with the code of a SEPA country, for example FI.",
    iban_length: "The IBAN has the wrong length for its country.",
    iban_checksum: "The IBAN's check digits are wrong. Check for a typing error.",
    iban_not_payment_country: "The account must be in the same country as this payment.",
    iban_same_as_creditor: "The account must not be the account this payment goes to.",
    retry: (
        "Please try again",
        "We could not get an answer from your bank. Nothing was paid. Please try again.",
    ),
    busy: (
        "Just a moment",
        "We are contacting your bank. Please try again in a moment.",
    ),
    unresolved: (
        "Check with your bank",
        "We did not get an answer from your bank, and your bank may have made the payment without asking you to approve it. Please check your bank account before you pay again, or ask the shop.",
    ),
    try_again: "Try again",
    error_heading: "There is a problem",
};

const FI: ChoiceText = ChoiceText {
    choose_title: "Valitse pankkisi",
    choose_intro: "Valitse pankki, jossa hyväksyt tämän maksun.",
    choose_legend: "Pankit",
    iban_title: "Tilisi",
    iban_intro: "Anna sen tilin IBAN, jolta maksat. Hyväksyt maksun pankissa",
    iban_label: "IBAN",
    iban_hint: "Esimerkiksi FI21 1234 5600 0007 85. Välilyönnit sallitaan.",
    continue_label: "Jatka",
    iban_empty: "Anna IBAN.",
    iban_characters: "IBAN voi sisältää vain kirjaimia, numeroita ja välilyöntejä.",
    iban_country: "IBANin on alettava SEPA-maan tunnuksella, esimerkiksi FI.",
    iban_length: "IBANin pituus ei sovi sen maahan.",
    iban_checksum: "IBANin tarkistenumerot eivät täsmää. Tarkista kirjoitusvirheet.",
    iban_not_payment_country: "Tilin on oltava samassa maassa kuin tämä maksu.",
    iban_same_as_creditor: "Tili ei voi olla se tili, jolle tämä maksu menee.",
    retry: (
        "Yritä uudelleen",
        "Emme saaneet vastausta pankiltasi. Mitään ei maksettu. Yritä uudelleen.",
    ),
    busy: (
        "Hetkinen",
        "Otamme yhteyttä pankkiisi. Yritä hetken kuluttua uudelleen.",
    ),
    unresolved: (
        "Tarkista pankistasi",
        "Emme saaneet vastausta pankiltasi, ja pankkisi on voinut tehdä maksun pyytämättä sinulta hyväksyntää. Tarkista tilisi ennen kuin maksat uudelleen, tai kysy kaupalta.",
    ),
    try_again: "Yritä uudelleen",
    error_heading: "Tarkista tiedot",
};

const SV: ChoiceText = ChoiceText {
    choose_title: "Välj din bank",
    choose_intro: "Välj banken där du godkänner betalningen.",
    choose_legend: "Banker",
    iban_title: "Ditt konto",
    iban_intro: "Ange IBAN för kontot du betalar från. Du godkänner betalningen hos",
    iban_label: "IBAN",
    iban_hint: "Till exempel SE45 5000 0000 0583 9825 7466. Mellanslag går bra.",
    continue_label: "Fortsätt",
    iban_empty: "Ange ditt IBAN.",
    iban_characters: "IBAN får bara innehålla bokstäver, siffror och mellanslag.",
    iban_country: "IBAN måste börja med koden för ett SEPA-land, till exempel SE.",
    iban_length: "IBAN har fel längd för sitt land.",
    iban_checksum: "IBAN:s kontrollsiffror stämmer inte. Kontrollera om det finns ett skrivfel.",
    iban_not_payment_country: "Kontot måste finnas i samma land som den här betalningen.",
    iban_same_as_creditor: "Kontot får inte vara det konto som den här betalningen går till.",
    retry: (
        "Försök igen",
        "Vi fick inget svar från din bank. Inget har betalats. Försök igen.",
    ),
    busy: (
        "Ett ögonblick",
        "Vi kontaktar din bank. Försök igen om en liten stund.",
    ),
    unresolved: (
        "Kontrollera med din bank",
        "Vi fick inget svar från din bank, och banken kan ha genomfört betalningen utan att be dig godkänna den. Kontrollera ditt konto innan du betalar igen, eller fråga butiken.",
    ),
    try_again: "Försök igen",
    error_heading: "Något behöver rättas",
};

const DA: ChoiceText = ChoiceText {
    choose_title: "Vælg din bank",
    choose_intro: "Vælg den bank, hvor du godkender betalingen.",
    choose_legend: "Banker",
    iban_title: "Din konto",
    iban_intro: "Indtast IBAN for den konto, du betaler fra. Du godkender betalingen hos",
    iban_label: "IBAN",
    iban_hint: "For eksempel DK50 0040 0440 1162 43. Mellemrum er i orden.",
    continue_label: "Fortsæt",
    iban_empty: "Indtast dit IBAN.",
    iban_characters: "IBAN må kun indeholde bogstaver, tal og mellemrum.",
    iban_country: "IBAN skal begynde med koden for et SEPA-land, for eksempel DK.",
    iban_length: "IBAN har forkert længde for sit land.",
    iban_checksum: "IBAN's kontrolcifre passer ikke. Tjek for en tastefejl.",
    iban_not_payment_country: "Kontoen skal være i samme land som denne betaling.",
    iban_same_as_creditor: "Kontoen må ikke være den konto, som denne betaling går til.",
    retry: (
        "Prøv igen",
        "Vi fik ikke svar fra din bank. Intet er betalt. Prøv igen.",
    ),
    busy: (
        "Et øjeblik",
        "Vi kontakter din bank. Prøv igen om et øjeblik.",
    ),
    unresolved: (
        "Tjek med din bank",
        "Vi fik ikke svar fra din bank, og banken kan have gennemført betalingen uden at bede dig om at godkende den. Tjek din konto, før du betaler igen, eller spørg butikken.",
    ),
    try_again: "Prøv igen",
    error_heading: "Der er et problem",
};

const NB: ChoiceText = ChoiceText {
    choose_title: "Velg banken din",
    choose_intro: "Velg banken der du godkjenner betalingen.",
    choose_legend: "Banker",
    iban_title: "Kontoen din",
    iban_intro: "Skriv inn IBAN for kontoen du betaler fra. Du godkjenner betalingen hos",
    iban_label: "IBAN",
    iban_hint: "For eksempel NO93 8601 1117 947. Mellomrom går fint.",
    continue_label: "Fortsett",
    iban_empty: "Skriv inn IBAN.",
    iban_characters: "IBAN kan bare inneholde bokstaver, tall og mellomrom.",
    iban_country: "IBAN må begynne med koden til et SEPA-land, for eksempel NO.",
    iban_length: "IBAN har feil lengde for landet sitt.",
    iban_checksum: "Kontrollsifrene i IBAN stemmer ikke. Se etter en skrivefeil.",
    iban_not_payment_country: "Kontoen må være i samme land som denne betalingen.",
    iban_same_as_creditor: "Kontoen kan ikke være kontoen denne betalingen går til.",
    retry: (
        "Prøv igjen",
        "Vi fikk ikke svar fra banken din. Ingenting er betalt. Prøv igjen.",
    ),
    busy: (
        "Et øyeblikk",
        "Vi kontakter banken din. Prøv igjen om et øyeblikk.",
    ),
    unresolved: (
        "Sjekk med banken din",
        "Vi fikk ikke svar fra banken din, og banken kan ha gjennomført betalingen uten å be deg godkjenne den. Sjekk kontoen din før du betaler igjen, eller spør butikken.",
    ),
    try_again: "Prøv igjen",
    error_heading: "Noe må rettes",
};

/// The deferred-initiation pages' words in `lang`.
pub fn choice_text(lang: Language) -> &'static ChoiceText {
    match lang {
        Language::En => &EN,
        Language::Fi => &FI,
        Language::Sv => &SV,
        Language::Da => &DA,
        Language::No => &NB,
    }
}
