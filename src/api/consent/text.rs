//! The consent page's words in English, Finnish, Swedish, Danish and Norwegian (bokmål), and
//! the choice of language: the payment's own `language`, else the browser's
//! `Accept-Language`, else English.

use crate::domain::Language;

/// Every sentence a shopper can read on the hop's pages, in one language.
pub struct Text {
    /// The `lang` attribute of the page.
    pub html_lang: &'static str,
    pub title: &'static str,
    pub next_step: &'static str,
    /// The merchant whose checkout sent the shopper here (the header and the table use
    /// this one word for it).
    pub shop: &'static str,
    pub amount: &'static str,
    /// Whose account receives the money (the creditor): one word for it everywhere.
    pub recipient: &'static str,
    pub account: &'static str,
    pub message: &'static str,
    /// The creditor's payment reference (RF or OCR).
    pub reference: &'static str,
    /// The merchant's own order reference.
    pub order: &'static str,
    pub date: &'static str,
    pub as_soon_as_possible: &'static str,
    pub repeats: &'static str,
    pub bank: &'static str,
    /// Followed by the bank's name.
    pub continue_to: &'static str,
    pub cancel: &'static str,
    pub back: &'static str,
    pub close_window: &'static str,
    /// The provider line: `{provided_by} {legal name}, {pisp} ({licence}: {licence text}).`
    pub provided_by: &'static str,
    pub pisp: &'static str,
    pub licence: &'static str,
    pub unknown: (&'static str, &'static str),
    pub not_ready: (&'static str, &'static str),
    pub expired: (&'static str, &'static str),
    pub cancelled: (&'static str, &'static str),
    pub paid: (&'static str, &'static str),
    pub signed: (&'static str, &'static str),
    pub closed: (&'static str, &'static str),
    pub unavailable: (&'static str, &'static str),
    /// The bank made the payment with other terms than the merchant asked for: pisgate
    /// does not send it for signing.
    pub terms_mismatch: (&'static str, &'static str),
    /// The bank needs no step on its page: it exempted the payment from SCA, or asks the
    /// shopper in its own app (a decoupled SCA it started with the payment).
    pub at_the_bank: (&'static str, &'static str),
    /// What a link previewer, a link check or a prefetch is shown: nothing of the payment.
    pub preview: (&'static str, &'static str),
    /// That page's link, for a person whose browser was taken for a previewer.
    pub preview_continue: &'static str,
}

const EN: Text = Text {
    html_lang: "en",
    title: "Confirm your payment",
    next_step: "Check the details. You approve the payment at your bank in the next step.",
    shop: "Shop",
    amount: "Amount",
    recipient: "Recipient",
    account: "Account",
    message: "Message",
    reference: "Reference",
    order: "Order number",
    date: "Payment date",
    as_soon_as_possible: "As soon as possible",
    repeats: "Repeats",
    bank: "Bank",
    continue_to: "Continue to",
    cancel: "Cancel and return to the shop",
    back: "Return to the shop",
    close_window: "You can close this window and return to the shop.",
    provided_by: "This page is provided by",
    pisp: "a payment initiation service provider",
    licence: "licence",
    unknown: ("Link not valid", "This payment link is not known to us."),
    not_ready: (
        "Payment not ready",
        "This payment is not ready to be signed yet. Please return to the shop and try again.",
    ),
    expired: (
        "Payment link expired",
        "The time to sign this payment has run out. Please return to the shop to start again.",
    ),
    cancelled: (
        "Payment cancelled",
        "This payment was cancelled and can no longer be signed.",
    ),
    paid: ("Payment complete", "This payment has been paid."),
    signed: (
        "Payment signed",
        "This payment has already been signed. You can return to the shop.",
    ),
    closed: (
        "Payment closed",
        "This payment can no longer be signed. Please return to the shop.",
    ),
    unavailable: (
        "Please try again",
        "We could not open this payment just now. Please try again in a moment.",
    ),
    terms_mismatch: (
        "Payment stopped",
        "Your bank registered this payment with another amount or recipient than the shop asked for, so it will not be sent to you for signing. Please return to the shop.",
    ),
    at_the_bank: (
        "Payment sent to your bank",
        "Your bank has this payment and needs nothing more from you here. If your bank's app asks you to confirm it, do so there. You can return to the shop.",
    ),
    preview: (
        "Payment link",
        "Open this link in your web browser to see the payment and continue to your bank.",
    ),
    preview_continue: "Already in your browser? Continue",
};

const FI: Text = Text {
    html_lang: "fi",
    title: "Vahvista maksu",
    next_step: "Tarkista tiedot. Hyväksyt maksun pankissasi seuraavassa vaiheessa.",
    shop: "Kauppa",
    amount: "Summa",
    recipient: "Saaja",
    account: "Tili",
    message: "Viesti",
    reference: "Viite",
    order: "Tilausnumero",
    date: "Maksupäivä",
    as_soon_as_possible: "Mahdollisimman pian",
    repeats: "Toistuu",
    bank: "Pankki",
    continue_to: "Jatka pankkiin",
    cancel: "Peruuta ja palaa kauppaan",
    back: "Palaa kauppaan",
    close_window: "Voit sulkea tämän ikkunan ja palata kauppaan.",
    provided_by: "Tämän sivun tarjoaa",
    pisp: "maksutoimeksiantopalvelun tarjoaja",
    licence: "toimilupa",
    unknown: ("Linkki ei kelpaa", "Emme tunnista tätä maksulinkkiä."),
    not_ready: (
        "Maksu ei ole valmis",
        "Tätä maksua ei voi vielä hyväksyä. Palaa kauppaan ja yritä uudelleen.",
    ),
    expired: (
        "Maksulinkki on vanhentunut",
        "Maksun hyväksymisaika on päättynyt. Palaa kauppaan aloittaaksesi alusta.",
    ),
    cancelled: (
        "Maksu on peruttu",
        "Tämä maksu on peruttu, eikä sitä voi enää hyväksyä.",
    ),
    paid: ("Maksu on suoritettu", "Tämä maksu on maksettu."),
    signed: (
        "Maksu on hyväksytty",
        "Tämä maksu on jo hyväksytty. Voit palata kauppaan.",
    ),
    closed: (
        "Maksu on suljettu",
        "Tätä maksua ei voi enää hyväksyä. Palaa kauppaan.",
    ),
    unavailable: (
        "Yritä uudelleen",
        "Emme juuri nyt saaneet maksua auki. Yritä hetken kuluttua uudelleen.",
    ),
    terms_mismatch: (
        "Maksu pysäytetty",
        "Pankkisi kirjasi maksun eri summalla tai saajalla kuin kauppa pyysi, joten sitä ei lähetetä sinulle hyväksyttäväksi. Palaa kauppaan.",
    ),
    at_the_bank: (
        "Maksu on lähetetty pankkiisi",
        "Pankkisi on vastaanottanut maksun, eikä sinun tarvitse tehdä täällä muuta. Jos pankkisi sovellus pyytää vahvistamaan maksun, vahvista se siellä. Voit palata kauppaan.",
    ),
    preview: (
        "Maksulinkki",
        "Avaa tämä linkki selaimessasi nähdäksesi maksun ja jatkaaksesi pankkiisi.",
    ),
    preview_continue: "Oletko jo selaimessasi? Jatka",
};

const SV: Text = Text {
    html_lang: "sv",
    title: "Bekräfta betalningen",
    next_step: "Kontrollera uppgifterna. Du godkänner betalningen i din bank i nästa steg.",
    shop: "Butik",
    amount: "Belopp",
    recipient: "Mottagare",
    account: "Konto",
    message: "Meddelande",
    reference: "Referens",
    order: "Ordernummer",
    date: "Betalningsdag",
    as_soon_as_possible: "Så snart som möjligt",
    repeats: "Upprepas",
    bank: "Bank",
    continue_to: "Fortsätt till",
    cancel: "Avbryt och återgå till butiken",
    back: "Återgå till butiken",
    close_window: "Du kan stänga det här fönstret och återgå till butiken.",
    provided_by: "Sidan tillhandahålls av",
    pisp: "leverantör av betalningsinitieringstjänster",
    licence: "tillstånd",
    unknown: (
        "Länken är inte giltig",
        "Vi känner inte igen den här betalningslänken.",
    ),
    not_ready: (
        "Betalningen är inte klar",
        "Betalningen kan inte signeras än. Återgå till butiken och försök igen.",
    ),
    expired: (
        "Betalningslänken har gått ut",
        "Tiden för att signera betalningen har gått ut. Återgå till butiken och börja om.",
    ),
    cancelled: (
        "Betalningen är avbruten",
        "Betalningen har avbrutits och kan inte längre signeras.",
    ),
    paid: ("Betalningen är klar", "Betalningen har betalats."),
    signed: (
        "Betalningen är signerad",
        "Betalningen är redan signerad. Du kan återgå till butiken.",
    ),
    closed: (
        "Betalningen är stängd",
        "Betalningen kan inte längre signeras. Återgå till butiken.",
    ),
    unavailable: (
        "Försök igen",
        "Vi kunde inte öppna betalningen just nu. Försök igen om en stund.",
    ),
    terms_mismatch: (
        "Betalningen stoppad",
        "Din bank registrerade betalningen med ett annat belopp eller en annan mottagare än butiken bad om, så den skickas inte till dig för signering. Gå tillbaka till butiken.",
    ),
    at_the_bank: (
        "Betalningen har skickats till din bank",
        "Din bank har tagit emot betalningen och behöver inget mer från dig här. Om din banks app ber dig bekräfta den, gör det där. Du kan gå tillbaka till butiken.",
    ),
    preview: (
        "Betalningslänk",
        "Öppna länken i din webbläsare för att se betalningen och gå vidare till din bank.",
    ),
    preview_continue: "Redan i din webbläsare? Fortsätt",
};

const DA: Text = Text {
    html_lang: "da",
    title: "Bekræft betalingen",
    next_step: "Kontroller oplysningerne. Du godkender betalingen i din bank i næste trin.",
    shop: "Butik",
    amount: "Beløb",
    recipient: "Modtager",
    account: "Konto",
    message: "Besked",
    reference: "Reference",
    order: "Ordrenummer",
    date: "Betalingsdato",
    as_soon_as_possible: "Hurtigst muligt",
    repeats: "Gentages",
    bank: "Bank",
    continue_to: "Fortsæt til",
    cancel: "Annuller og vend tilbage til butikken",
    back: "Vend tilbage til butikken",
    close_window: "Du kan lukke dette vindue og vende tilbage til butikken.",
    provided_by: "Siden leveres af",
    pisp: "udbyder af betalingsinitieringstjenester",
    licence: "tilladelse",
    unknown: (
        "Linket er ikke gyldigt",
        "Vi kender ikke dette betalingslink.",
    ),
    not_ready: (
        "Betalingen er ikke klar",
        "Betalingen kan ikke godkendes endnu. Vend tilbage til butikken og prøv igen.",
    ),
    expired: (
        "Betalingslinket er udløbet",
        "Tiden til at godkende betalingen er udløbet. Vend tilbage til butikken og start forfra.",
    ),
    cancelled: (
        "Betalingen er annulleret",
        "Betalingen er annulleret og kan ikke længere godkendes.",
    ),
    paid: ("Betalingen er gennemført", "Betalingen er betalt."),
    signed: (
        "Betalingen er godkendt",
        "Betalingen er allerede godkendt. Du kan vende tilbage til butikken.",
    ),
    closed: (
        "Betalingen er lukket",
        "Betalingen kan ikke længere godkendes. Vend tilbage til butikken.",
    ),
    unavailable: (
        "Prøv igen",
        "Vi kunne ikke åbne betalingen lige nu. Prøv igen om et øjeblik.",
    ),
    terms_mismatch: (
        "Betalingen er stoppet",
        "Din bank registrerede betalingen med et andet beløb eller en anden modtager, end butikken bad om, så den sendes ikke til dig til godkendelse. Gå tilbage til butikken.",
    ),
    at_the_bank: (
        "Betalingen er sendt til din bank",
        "Din bank har modtaget betalingen og har ikke brug for mere fra dig her. Hvis din banks app beder dig bekræfte den, så gør det der. Du kan vende tilbage til butikken.",
    ),
    preview: (
        "Betalingslink",
        "Åbn linket i din browser for at se betalingen og fortsætte til din bank.",
    ),
    preview_continue: "Allerede i din browser? Fortsæt",
};

const NB: Text = Text {
    html_lang: "nb",
    title: "Bekreft betalingen",
    next_step: "Kontroller opplysningene. Du godkjenner betalingen i banken din i neste steg.",
    shop: "Butikk",
    amount: "Beløp",
    recipient: "Mottaker",
    account: "Konto",
    message: "Melding",
    reference: "Referanse",
    order: "Ordrenummer",
    date: "Betalingsdato",
    as_soon_as_possible: "Så snart som mulig",
    repeats: "Gjentas",
    bank: "Bank",
    continue_to: "Fortsett til",
    cancel: "Avbryt og gå tilbake til butikken",
    back: "Gå tilbake til butikken",
    close_window: "Du kan lukke dette vinduet og gå tilbake til butikken.",
    provided_by: "Siden leveres av",
    pisp: "tilbyder av betalingsfullmaktstjenester",
    licence: "tillatelse",
    unknown: (
        "Lenken er ikke gyldig",
        "Vi kjenner ikke igjen denne betalingslenken.",
    ),
    not_ready: (
        "Betalingen er ikke klar",
        "Betalingen kan ikke godkjennes ennå. Gå tilbake til butikken og prøv igjen.",
    ),
    expired: (
        "Betalingslenken er utløpt",
        "Tiden for å godkjenne betalingen er ute. Gå tilbake til butikken for å begynne på nytt.",
    ),
    cancelled: (
        "Betalingen er avbrutt",
        "Betalingen er avbrutt og kan ikke lenger godkjennes.",
    ),
    paid: ("Betalingen er fullført", "Betalingen er betalt."),
    signed: (
        "Betalingen er godkjent",
        "Betalingen er allerede godkjent. Du kan gå tilbake til butikken.",
    ),
    closed: (
        "Betalingen er lukket",
        "Betalingen kan ikke lenger godkjennes. Gå tilbake til butikken.",
    ),
    unavailable: (
        "Prøv igjen",
        "Vi kunne ikke åpne betalingen akkurat nå. Prøv igjen om litt.",
    ),
    terms_mismatch: (
        "Betalingen er stoppet",
        "Banken din registrerte betalingen med et annet beløp eller en annen mottaker enn butikken ba om, så den sendes ikke til deg for godkjenning. Gå tilbake til butikken.",
    ),
    at_the_bank: (
        "Betalingen er sendt til banken din",
        "Banken din har mottatt betalingen og trenger ikke mer fra deg her. Hvis bankens app ber deg bekrefte den, gjør du det der. Du kan gå tilbake til butikken.",
    ),
    preview: (
        "Betalingslenke",
        "Åpne lenken i nettleseren din for å se betalingen og gå videre til banken din.",
    ),
    preview_continue: "Allerede i nettleseren din? Fortsett",
};

/// The words of the pages of an authorisation pisgate starts for the shopper (explicit
/// redirect and decoupled SCA, [`crate::api::sca`]), in one language.
pub struct ScaText {
    /// The PSU-ID form's heading.
    pub identify_title: &'static str,
    /// Followed by the bank's name: the label of the user id field.
    pub user_id_at: &'static str,
    pub identify_hint: &'static str,
    pub send: &'static str,
    /// The field is empty.
    pub user_id_missing: &'static str,
    /// The field is longer than 70 characters or holds control characters.
    pub user_id_invalid: &'static str,
    /// The waiting page's heading.
    pub approve_in_app: &'static str,
    /// Followed by the bank's name.
    pub open_app: &'static str,
    pub page_refreshes: &'static str,
    pub check_now: &'static str,
}

const SCA_EN: ScaText = ScaText {
    identify_title: "Identify yourself at your bank",
    user_id_at: "Your user ID at",
    identify_hint: "Your bank then asks you to approve the payment in its app.",
    send: "Continue",
    user_id_missing: "Enter your user ID.",
    user_id_invalid: "The user ID can have at most 70 characters: only the letters A–Z, digits and punctuation.",
    approve_in_app: "Approve the payment in your bank's app",
    open_app: "Open the app of",
    page_refreshes: "This page updates itself every few seconds and takes you back to the shop once your bank has answered.",
    check_now: "Check now",
};

const SCA_FI: ScaText = ScaText {
    identify_title: "Tunnistaudu pankissasi",
    user_id_at: "Käyttäjätunnuksesi pankissa",
    identify_hint: "Pankkisi pyytää sinua sitten hyväksymään maksun sovelluksessaan.",
    send: "Jatka",
    user_id_missing: "Anna käyttäjätunnuksesi.",
    user_id_invalid: "Käyttäjätunnuksessa voi olla enintään 70 merkkiä: vain kirjaimia A–Z, numeroita ja välimerkkejä.",
    approve_in_app: "Hyväksy maksu pankkisi sovelluksessa",
    open_app: "Avaa sovellus:",
    page_refreshes: "Tämä sivu päivittyy muutaman sekunnin välein ja vie sinut takaisin kauppaan, kun pankkisi on vastannut.",
    check_now: "Tarkista nyt",
};

const SCA_SV: ScaText = ScaText {
    identify_title: "Identifiera dig hos din bank",
    user_id_at: "Ditt användar-ID hos",
    identify_hint: "Din bank ber dig sedan godkänna betalningen i sin app.",
    send: "Fortsätt",
    user_id_missing: "Ange ditt användar-ID.",
    user_id_invalid: "Användar-ID:t får ha högst 70 tecken: bara bokstäverna A–Z, siffror och skiljetecken.",
    approve_in_app: "Godkänn betalningen i din banks app",
    open_app: "Öppna appen från",
    page_refreshes: "Sidan uppdateras av sig själv med några sekunders mellanrum och tar dig tillbaka till butiken när banken har svarat.",
    check_now: "Kontrollera nu",
};

const SCA_DA: ScaText = ScaText {
    identify_title: "Identificér dig hos din bank",
    user_id_at: "Dit bruger-id hos",
    identify_hint: "Din bank beder dig derefter godkende betalingen i sin app.",
    send: "Fortsæt",
    user_id_missing: "Indtast dit bruger-id.",
    user_id_invalid: "Bruger-id'et må højst have 70 tegn: kun bogstaverne A–Z, tal og tegnsætning.",
    approve_in_app: "Godkend betalingen i din banks app",
    open_app: "Åbn appen fra",
    page_refreshes: "Siden opdaterer sig selv med få sekunders mellemrum og sender dig tilbage til butikken, når banken har svaret.",
    check_now: "Tjek nu",
};

const SCA_NB: ScaText = ScaText {
    identify_title: "Identifiser deg hos banken din",
    user_id_at: "Din bruker-ID hos",
    identify_hint: "Banken ber deg deretter godkjenne betalingen i appen sin.",
    send: "Fortsett",
    user_id_missing: "Skriv inn bruker-ID-en din.",
    user_id_invalid: "Bruker-ID-en kan ha høyst 70 tegn: bare bokstavene A–Z, sifre og skilletegn.",
    approve_in_app: "Godkjenn betalingen i bankens app",
    open_app: "Åpne appen fra",
    page_refreshes: "Siden oppdaterer seg selv med noen sekunders mellomrom og tar deg tilbake til butikken når banken har svart.",
    check_now: "Sjekk nå",
};

/// The authorisation pages' words in `lang`.
pub fn sca_text(lang: Language) -> &'static ScaText {
    match lang {
        Language::En => &SCA_EN,
        Language::Fi => &SCA_FI,
        Language::Sv => &SCA_SV,
        Language::Da => &SCA_DA,
        Language::No => &SCA_NB,
    }
}

pub fn text(lang: Language) -> &'static Text {
    match lang {
        Language::En => &EN,
        Language::Fi => &FI,
        Language::Sv => &SV,
        Language::Da => &DA,
        Language::No => &NB,
    }
}

/// The words of the callback's plain pages (the shopper's return from the bank), in one
/// language. Each pair is (title, message).
pub struct CallbackText {
    /// Signed, and the merchant gave no return URL to send the shopper to.
    pub signed: (&'static str, &'static str),
    /// The return could not be recorded just now (the database, a crash).
    pub retry: (&'static str, &'static str),
    /// The title of every refused return link.
    pub link_not_valid: &'static str,
    pub incomplete: &'static str,
    pub unknown: &'static str,
    pub expired: &'static str,
    pub no_authorization: &'static str,
}

const CALLBACK_EN: CallbackText = CallbackText {
    signed: (
        "Payment signed",
        "Your payment was received. You can return to the shop.",
    ),
    retry: (
        "Please try again",
        "We could not record your return from the bank just now. Please reload this page in a moment; your bank has your payment.",
    ),
    link_not_valid: "Link not valid",
    incomplete: "This return link is incomplete.",
    unknown: "This return link is not known to us.",
    expired: "This return link has expired.",
    no_authorization: "This return link carries no authorization.",
};

const CALLBACK_FI: CallbackText = CallbackText {
    signed: (
        "Maksu allekirjoitettu",
        "Maksusi on vastaanotettu. Voit palata kauppaan.",
    ),
    retry: (
        "Yritä uudelleen",
        "Emme juuri nyt pystyneet kirjaamaan paluutasi pankista. Lataa tämä sivu uudelleen hetken kuluttua; pankillasi on maksusi.",
    ),
    link_not_valid: "Linkki ei kelpaa",
    incomplete: "Tämä paluulinkki on puutteellinen.",
    unknown: "Emme tunne tätä paluulinkkiä.",
    expired: "Tämä paluulinkki on vanhentunut.",
    no_authorization: "Tässä paluulinkissä ei ole valtuutusta.",
};

const CALLBACK_SV: CallbackText = CallbackText {
    signed: (
        "Betalningen är signerad",
        "Din betalning har tagits emot. Du kan återgå till butiken.",
    ),
    retry: (
        "Försök igen",
        "Vi kunde inte registrera din återkomst från banken just nu. Ladda om sidan om en stund; din bank har din betalning.",
    ),
    link_not_valid: "Länken är inte giltig",
    incomplete: "Den här returlänken är ofullständig.",
    unknown: "Den här returlänken känner vi inte till.",
    expired: "Den här returlänken har gått ut.",
    no_authorization: "Den här returlänken innehåller inget godkännande.",
};

const CALLBACK_DA: CallbackText = CallbackText {
    signed: (
        "Betalingen er underskrevet",
        "Din betaling er modtaget. Du kan vende tilbage til butikken.",
    ),
    retry: (
        "Prøv igen",
        "Vi kunne ikke registrere din tilbagevenden fra banken lige nu. Genindlæs siden om et øjeblik; din bank har din betaling.",
    ),
    link_not_valid: "Linket er ikke gyldigt",
    incomplete: "Dette returlink er ufuldstændigt.",
    unknown: "Dette returlink kender vi ikke.",
    expired: "Dette returlink er udløbet.",
    no_authorization: "Dette returlink indeholder ingen godkendelse.",
};

const CALLBACK_NB: CallbackText = CallbackText {
    signed: (
        "Betalingen er signert",
        "Betalingen din er mottatt. Du kan gå tilbake til butikken.",
    ),
    retry: (
        "Prøv igjen",
        "Vi kunne ikke registrere at du kom tilbake fra banken akkurat nå. Last inn siden på nytt om litt; banken din har betalingen.",
    ),
    link_not_valid: "Lenken er ikke gyldig",
    incomplete: "Denne returlenken er ufullstendig.",
    unknown: "Denne returlenken kjenner vi ikke til.",
    expired: "Denne returlenken har utløpt.",
    no_authorization: "Denne returlenken inneholder ingen godkjenning.",
};

/// The callback pages' words in `lang`.
pub fn callback_text(lang: Language) -> &'static CallbackText {
    match lang {
        Language::En => &CALLBACK_EN,
        Language::Fi => &CALLBACK_FI,
        Language::Sv => &CALLBACK_SV,
        Language::Da => &CALLBACK_DA,
        Language::No => &CALLBACK_NB,
    }
}

/// The page's language: the payment's own, else the first of the browser's
/// `Accept-Language` choices (by weight) that we speak, else English. `nb`, `nn` and `no`
/// all read as Norwegian bokmål.
pub fn choose(payment: Option<&str>, accept_language: Option<&str>) -> Language {
    if let Some(l) = payment.and_then(Language::parse) {
        return l;
    }
    let mut choices: Vec<(u16, usize, Language)> = accept_language
        .unwrap_or("")
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut bits = part.split(';');
            let tag = bits.next()?.trim().to_ascii_lowercase();
            let primary = tag.split('-').next()?;
            let lang = match primary {
                "nb" | "nn" | "no" => Language::No,
                other => Language::parse(other)?,
            };
            let q = bits
                .find_map(|b| b.trim().strip_prefix("q="))
                .map_or(Some(1000), parse_weight)?;
            (q > 0).then_some((q, i, lang))
        })
        .collect();
    choices.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    choices.first().map_or(Language::En, |c| c.2)
}

/// An HTTP quality value (`0`, `0.8`, `1.000`) in thousandths, without floats.
fn parse_weight(q: &str) -> Option<u16> {
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let frac: u16 = format!("{frac:0<3}").parse().ok()?;
    let w = int * 1000 + frac;
    (w <= 1000).then_some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payments_language_wins_over_the_browsers() {
        assert_eq!(choose(Some("fi"), Some("sv-SE,sv;q=0.9")), Language::Fi);
        assert_eq!(choose(Some("no"), None), Language::No);
    }

    #[test]
    fn the_browsers_best_weighted_language_we_speak_is_chosen() {
        assert_eq!(
            choose(None, Some("de-DE,de;q=0.9,sv;q=0.8,en;q=0.5")),
            Language::Sv
        );
        assert_eq!(choose(None, Some("en;q=0.4, da;q=0.7")), Language::Da);
        assert_eq!(choose(None, Some("nb-NO")), Language::No);
        assert_eq!(choose(None, Some("nn")), Language::No);
        assert_eq!(choose(None, Some("fi-FI, en")), Language::Fi);
        assert_eq!(choose(None, Some("fi;q=0, sv;q=0.1")), Language::Sv);
    }

    #[test]
    fn english_when_nothing_we_speak_is_asked_for() {
        assert_eq!(choose(None, None), Language::En);
        assert_eq!(choose(None, Some("de, fr;q=0.5")), Language::En);
        assert_eq!(choose(None, Some("fi;q=abc")), Language::En);
        assert_eq!(choose(Some("xx"), Some("")), Language::En);
    }
}
