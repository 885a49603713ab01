//! The BankID page's words in English, Finnish, Swedish, Danish and Norwegian (bokmål), and
//! the message for every BankID hint code.
//!
//! The hint messages follow BankID's recommended user messages (the RFA codes of BankID's
//! relying-party guidelines) in spirit: RFA1 "start the app", RFA3 "cancelled, try again",
//! RFA4 "already in progress", RFA5 internal error, RFA6 cancelled by the user, RFA8 the app
//! does not answer, RFA9 enter your security code, RFA14/15 searching, RFA16 blocked or too
//! old BankID, RFA17 the app could not be started or could not read the QR code, RFA21 in
//! progress, RFA22 unknown error, RFA23 travel document. The Swedish ones are BankID's own
//! words where BankID gives them. Where the app's own button is named (Identifiera, Skriv
//! under) only the app's languages (Swedish, English) name it; the other languages say what
//! to confirm instead.
//!
//! Never shown to the shopper: the bank's raw hint code or its own text in place of these
//! (a code pisgate does not know gets the general message of the order's state).

use crate::bank::{BankIdPurpose, BankIdState};
use crate::domain::Language;

/// A sentence per purpose: `[identify, sign]`.
type Pair = [&'static str; 2];

/// The page's own words, in one language.
pub struct Words {
    pub title_identify: &'static str,
    pub title_sign: &'static str,
    /// Under the heading, phase identify: why the shopper identifies first.
    pub lead_identify: &'static str,
    /// Under the heading, phase sign.
    pub lead_sign: &'static str,
    /// How to scan the QR code with a phone.
    pub scan: &'static str,
    /// The accessible name of the QR code.
    pub qr_label: &'static str,
    /// The autostart link's text.
    pub open_here: &'static str,
    pub try_again: &'static str,
    pub continue_: &'static str,
    /// Said while the page refreshes itself (so that nobody is surprised by it).
    pub updates_itself: &'static str,
}

/// The hint messages of one language, each per purpose.
pub struct Hints {
    /// Pending, no hint code or one pisgate does not know (RFA21).
    pending: Pair,
    /// `outstandingTransaction`, `noClient` (RFA1/RFA13: the page offers both ways).
    start: Pair,
    /// `started` (RFA14/RFA15).
    searching: Pair,
    /// `userSign` (RFA9).
    enter_code: Pair,
    /// `userMrtd` (RFA23).
    travel_document: Pair,
    /// `userCallConfirm`: the app asks whether someone on the phone asked for this.
    call_question: Pair,
    /// The order is complete.
    complete: Pair,
    /// Failed, no hint code or one pisgate does not know (RFA22).
    failed: Pair,
    /// `userCancel` (RFA6).
    user_cancel: Pair,
    /// `expiredTransaction` (RFA8).
    expired: Pair,
    /// `certificateErr` (RFA16).
    certificate: Pair,
    /// `startFailed` (RFA17).
    start_failed: Pair,
    /// `cancelled` (RFA3).
    cancelled: Pair,
    /// `alreadyInProgress`, SEB's `ALREADY_IN_PROGRESS` (RFA4).
    already: Pair,
    /// SEB's `sebTimeout`: SEB's time for the order ran out.
    timeout: Pair,
    /// `requestTimeout`, `maintenance`, `internalError` (RFA5).
    internal: Pair,
    /// `userDeclinedCall`: the shopper said in the app that someone on the phone asked.
    declined_call: Pair,
}

/// Every hint code pisgate knows, as BankID and SEB spell them, with the state it belongs
/// to. (Tests walk this list; [`hint_message`] matches ignoring case and underscores.)
pub const HINT_CODES: &[(&str, BankIdState)] = &[
    ("outstandingTransaction", BankIdState::Pending),
    ("noClient", BankIdState::Pending),
    ("started", BankIdState::Pending),
    ("userSign", BankIdState::Pending),
    ("userMrtd", BankIdState::Pending),
    ("userCallConfirm", BankIdState::Pending),
    ("userCancel", BankIdState::Failed),
    ("expiredTransaction", BankIdState::Failed),
    ("certificateErr", BankIdState::Failed),
    ("startFailed", BankIdState::Failed),
    ("cancelled", BankIdState::Failed),
    ("alreadyInProgress", BankIdState::Failed),
    ("ALREADY_IN_PROGRESS", BankIdState::Failed),
    ("sebTimeout", BankIdState::Failed),
    ("requestTimeout", BankIdState::Failed),
    ("maintenance", BankIdState::Failed),
    ("internalError", BankIdState::Failed),
    ("userDeclinedCall", BankIdState::Failed),
];

/// The message for a BankID order's hint code, for the order's purpose and state, in the
/// shopper's language. A complete order gets the purpose's "done"; a code that does not
/// belong to the state (a pending code on a failed order) or one pisgate does not know gets
/// the state's general message.
pub fn hint_message(
    code: Option<&str>,
    purpose: BankIdPurpose,
    state: BankIdState,
    lang: Language,
) -> &'static str {
    let h = hints(lang);
    let i = match purpose {
        BankIdPurpose::Identify => 0,
        BankIdPurpose::Sign => 1,
    };
    let key: String = code
        .unwrap_or("")
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let pair = match state {
        BankIdState::Complete => h.complete,
        BankIdState::Pending => match key.as_str() {
            "outstandingtransaction" | "noclient" => h.start,
            "started" => h.searching,
            "usersign" => h.enter_code,
            "usermrtd" => h.travel_document,
            "usercallconfirm" => h.call_question,
            _ => h.pending,
        },
        BankIdState::Failed => match key.as_str() {
            "usercancel" => h.user_cancel,
            "expiredtransaction" => h.expired,
            "certificateerr" => h.certificate,
            "startfailed" => h.start_failed,
            "cancelled" => h.cancelled,
            "alreadyinprogress" => h.already,
            "sebtimeout" => h.timeout,
            "requesttimeout" | "maintenance" | "internalerror" => h.internal,
            "userdeclinedcall" => h.declined_call,
            _ => h.failed,
        },
    };
    pair[i]
}

pub fn words(lang: Language) -> &'static Words {
    match lang {
        Language::En => &EN_WORDS,
        Language::Fi => &FI_WORDS,
        Language::Sv => &SV_WORDS,
        Language::Da => &DA_WORDS,
        Language::No => &NB_WORDS,
    }
}

fn hints(lang: Language) -> &'static Hints {
    match lang {
        Language::En => &EN_HINTS,
        Language::Fi => &FI_HINTS,
        Language::Sv => &SV_HINTS,
        Language::Da => &DA_HINTS,
        Language::No => &NB_HINTS,
    }
}

const fn both(s: &'static str) -> Pair {
    [s, s]
}

const EN_WORDS: Words = Words {
    title_identify: "Identify yourself with BankID",
    title_sign: "Sign the payment with BankID",
    lead_identify: "Identify yourself with Mobile BankID first. Then you sign the payment.",
    lead_sign: "Check the amount and the recipient in the BankID app before you sign.",
    scan: "Open the BankID app on your phone, tap Scan QR code and point the camera at the QR code.",
    qr_label: "QR code for the BankID app",
    open_here: "Open BankID on this device",
    try_again: "Try again",
    continue_: "Continue",
    updates_itself: "This page updates by itself.",
};

const EN_HINTS: Hints = Hints {
    pending: ["Identification in progress.", "Signing in progress."],
    start: both("Start the BankID app and scan the QR code, or open BankID on this device."),
    searching: both("Searching for BankID, it may take a little while …"),
    enter_code: [
        "Enter your security code in the BankID app and select Identify.",
        "Enter your security code in the BankID app and select Sign.",
    ],
    travel_document: both("Process your machine-readable travel document using the BankID app."),
    call_question: [
        "Answer the question in the BankID app. Never identify yourself because someone on the phone asked you to.",
        "Answer the question in the BankID app. Never sign because someone on the phone asked you to.",
    ],
    complete: [
        "You are identified. Preparing the payment …",
        "The payment is signed.",
    ],
    failed: both("Unknown error. Please try again."),
    user_cancel: [
        "Identification cancelled in the BankID app.",
        "Signing cancelled in the BankID app.",
    ],
    expired: both(
        "The BankID app is not responding. Please check that it is started and that you have internet access. If you don't have a valid BankID you can get one from your bank. Then try again.",
    ),
    certificate: both(
        "The BankID you are trying to use is blocked or too old. Please use another BankID or get a new one from your bank.",
    ),
    start_failed: both(
        "The BankID app could not be started or could not read the QR code. Check that the BankID app is installed and up to date, then try again. If you don't have a BankID, you can get one from your bank.",
    ),
    cancelled: both("Action cancelled. Please try again."),
    already: both(
        "An identification or signing for this personal number is already started. Please try again.",
    ),
    timeout: [
        "The time to identify yourself ran out. Please try again.",
        "The time to sign ran out. Please try again.",
    ],
    internal: both("Internal error. Please try again."),
    declined_call: [
        "Identification stopped in the BankID app because of a phone call. If someone asked you to identify yourself, do not try again.",
        "Signing stopped in the BankID app because of a phone call. If someone asked you to sign, do not try again.",
    ],
};

const SV_WORDS: Words = Words {
    title_identify: "Identifiera dig med BankID",
    title_sign: "Skriv under betalningen med BankID",
    lead_identify: "Identifiera dig först med Mobilt BankID. Sedan skriver du under betalningen.",
    lead_sign: "Kontrollera belopp och mottagare i BankID-appen innan du skriver under.",
    scan: "Starta BankID-appen i din mobil, tryck på Skanna QR-kod och rikta kameran mot QR-koden.",
    qr_label: "QR-kod för BankID-appen",
    open_here: "Öppna BankID på den här enheten",
    try_again: "Försök igen",
    continue_: "Fortsätt",
    updates_itself: "Sidan uppdateras automatiskt.",
};

const SV_HINTS: Hints = Hints {
    pending: ["Identifiering pågår.", "Underskrift pågår."],
    start: both("Starta BankID-appen och läs av QR-koden, eller öppna BankID på den här enheten."),
    searching: both("Söker efter BankID, det kan ta en liten stund …"),
    enter_code: [
        "Skriv in din säkerhetskod i BankID-appen och välj Identifiera.",
        "Skriv in din säkerhetskod i BankID-appen och välj Skriv under.",
    ],
    travel_document: both("Fotografera och läs av din ID-handling med BankID-appen."),
    call_question: [
        "Svara på frågan i BankID-appen. Identifiera dig aldrig för att någon i telefon ber dig om det.",
        "Svara på frågan i BankID-appen. Skriv aldrig under för att någon i telefon ber dig om det.",
    ],
    complete: [
        "Du är identifierad. Betalningen förbereds …",
        "Betalningen är underskriven.",
    ],
    failed: both("Okänt fel. Försök igen."),
    user_cancel: [
        "Identifieringen avbröts i BankID-appen.",
        "Underskriften avbröts i BankID-appen.",
    ],
    expired: both(
        "BankID-appen svarar inte. Kontrollera att den är startad och att du har internetanslutning. Om du inte har något giltigt BankID kan du skaffa ett hos din bank. Försök sedan igen.",
    ),
    certificate: both(
        "Det BankID du försöker använda är för gammalt eller spärrat. Använd ett annat BankID eller skaffa ett nytt hos din bank.",
    ),
    start_failed: both(
        "BankID-appen kunde inte startas eller kunde inte läsa av QR-koden. Kontrollera att BankID-appen är installerad och uppdaterad och försök igen. Om du inte har något BankID kan du skaffa ett hos din bank.",
    ),
    cancelled: both("Åtgärden avbruten. Försök igen."),
    already: both(
        "En identifiering eller underskrift för det här personnumret är redan påbörjad. Försök igen.",
    ),
    timeout: [
        "Tiden för att identifiera dig tog slut. Försök igen.",
        "Tiden för att skriva under tog slut. Försök igen.",
    ],
    internal: both("Internt tekniskt fel. Försök igen."),
    declined_call: [
        "Identifieringen stoppades i BankID-appen på grund av ett telefonsamtal. Om någon bad dig identifiera dig, försök inte igen.",
        "Underskriften stoppades i BankID-appen på grund av ett telefonsamtal. Om någon bad dig skriva under, försök inte igen.",
    ],
};

const FI_WORDS: Words = Words {
    title_identify: "Tunnistaudu BankIDillä",
    title_sign: "Allekirjoita maksu BankIDillä",
    lead_identify: "Tunnistaudu ensin Mobilt BankIDillä. Sen jälkeen allekirjoitat maksun.",
    lead_sign: "Tarkista summa ja saaja BankID-sovelluksessa ennen kuin allekirjoitat.",
    scan: "Avaa BankID-sovellus puhelimessasi, valitse QR-koodin skannaus ja osoita kameralla QR-koodia.",
    qr_label: "QR-koodi BankID-sovellukselle",
    open_here: "Avaa BankID tällä laitteella",
    try_again: "Yritä uudelleen",
    continue_: "Jatka",
    updates_itself: "Sivu päivittyy automaattisesti.",
};

const FI_HINTS: Hints = Hints {
    pending: [
        "Tunnistautuminen on käynnissä.",
        "Allekirjoitus on käynnissä.",
    ],
    start: both("Käynnistä BankID-sovellus ja skannaa QR-koodi tai avaa BankID tällä laitteella."),
    searching: both("Etsitään BankIDiä, tämä voi kestää hetken …"),
    enter_code: [
        "Syötä turvakoodisi BankID-sovellukseen ja vahvista tunnistautuminen.",
        "Syötä turvakoodisi BankID-sovellukseen ja vahvista allekirjoitus.",
    ],
    travel_document: both("Kuvaa ja lue henkilöllisyystodistuksesi BankID-sovelluksella."),
    call_question: [
        "Vastaa BankID-sovelluksen kysymykseen. Älä koskaan tunnistaudu siksi, että joku puhelimessa pyytää sitä.",
        "Vastaa BankID-sovelluksen kysymykseen. Älä koskaan allekirjoita siksi, että joku puhelimessa pyytää sitä.",
    ],
    complete: [
        "Olet tunnistautunut. Maksua valmistellaan …",
        "Maksu on allekirjoitettu.",
    ],
    failed: both("Tuntematon virhe. Yritä uudelleen."),
    user_cancel: [
        "Tunnistautuminen peruttiin BankID-sovelluksessa.",
        "Allekirjoitus peruttiin BankID-sovelluksessa.",
    ],
    expired: both(
        "BankID-sovellus ei vastaa. Tarkista, että se on käynnissä ja että sinulla on internetyhteys. Jos sinulla ei ole voimassa olevaa BankIDiä, saat sen pankistasi. Yritä sitten uudelleen.",
    ),
    certificate: both(
        "BankID, jota yrität käyttää, on liian vanha tai estetty. Käytä toista BankIDiä tai hanki uusi pankistasi.",
    ),
    start_failed: both(
        "BankID-sovellusta ei voitu käynnistää tai se ei pystynyt lukemaan QR-koodia. Tarkista, että BankID-sovellus on asennettu ja päivitetty, ja yritä uudelleen. Jos sinulla ei ole BankIDiä, saat sen pankistasi.",
    ),
    cancelled: both("Toiminto peruttiin. Yritä uudelleen."),
    already: both(
        "Tälle henkilötunnukselle on jo aloitettu tunnistautuminen tai allekirjoitus. Yritä uudelleen.",
    ),
    timeout: [
        "Aika tunnistautua loppui. Yritä uudelleen.",
        "Aika allekirjoittaa loppui. Yritä uudelleen.",
    ],
    internal: both("Sisäinen tekninen virhe. Yritä uudelleen."),
    declined_call: [
        "Tunnistautuminen keskeytettiin BankID-sovelluksessa puhelun vuoksi. Jos joku pyysi sinua tunnistautumaan, älä yritä uudelleen.",
        "Allekirjoitus keskeytettiin BankID-sovelluksessa puhelun vuoksi. Jos joku pyysi sinua allekirjoittamaan, älä yritä uudelleen.",
    ],
};

const DA_WORDS: Words = Words {
    title_identify: "Identificér dig med BankID",
    title_sign: "Underskriv betalingen med BankID",
    lead_identify: "Identificér dig først med Mobilt BankID. Derefter underskriver du betalingen.",
    lead_sign: "Kontrollér beløb og modtager i BankID-appen, før du skriver under.",
    scan: "Åbn BankID-appen på din telefon, tryk på Scan QR-kode, og ret kameraet mod QR-koden.",
    qr_label: "QR-kode til BankID-appen",
    open_here: "Åbn BankID på denne enhed",
    try_again: "Prøv igen",
    continue_: "Fortsæt",
    updates_itself: "Siden opdateres automatisk.",
};

const DA_HINTS: Hints = Hints {
    pending: ["Identifikation er i gang.", "Underskrift er i gang."],
    start: both("Start BankID-appen og scan QR-koden, eller åbn BankID på denne enhed."),
    searching: both("Søger efter BankID, det kan tage et øjeblik …"),
    enter_code: [
        "Indtast din sikkerhedskode i BankID-appen, og bekræft identifikationen.",
        "Indtast din sikkerhedskode i BankID-appen, og bekræft underskriften.",
    ],
    travel_document: both("Fotografér og aflæs dit rejsedokument med BankID-appen."),
    call_question: [
        "Besvar spørgsmålet i BankID-appen. Identificér dig aldrig, fordi nogen i telefonen beder dig om det.",
        "Besvar spørgsmålet i BankID-appen. Skriv aldrig under, fordi nogen i telefonen beder dig om det.",
    ],
    complete: [
        "Du er identificeret. Betalingen forberedes …",
        "Betalingen er underskrevet.",
    ],
    failed: both("Ukendt fejl. Prøv igen."),
    user_cancel: [
        "Identifikationen blev annulleret i BankID-appen.",
        "Underskriften blev annulleret i BankID-appen.",
    ],
    expired: both(
        "BankID-appen svarer ikke. Kontrollér, at den er startet, og at du har internetforbindelse. Hvis du ikke har et gyldigt BankID, kan du få et hos din bank. Prøv derefter igen.",
    ),
    certificate: both(
        "Det BankID, du forsøger at bruge, er for gammelt eller spærret. Brug et andet BankID, eller få et nyt hos din bank.",
    ),
    start_failed: both(
        "BankID-appen kunne ikke startes eller kunne ikke læse QR-koden. Kontrollér, at BankID-appen er installeret og opdateret, og prøv igen. Hvis du ikke har et BankID, kan du få et hos din bank.",
    ),
    cancelled: both("Handlingen blev annulleret. Prøv igen."),
    already: both(
        "En identifikation eller underskrift for dette personnummer er allerede startet. Prøv igen.",
    ),
    timeout: [
        "Tiden til at identificere dig løb ud. Prøv igen.",
        "Tiden til at skrive under løb ud. Prøv igen.",
    ],
    internal: both("Intern teknisk fejl. Prøv igen."),
    declined_call: [
        "Identifikationen blev stoppet i BankID-appen på grund af et telefonopkald. Hvis nogen bad dig identificere dig, så prøv ikke igen.",
        "Underskriften blev stoppet i BankID-appen på grund af et telefonopkald. Hvis nogen bad dig skrive under, så prøv ikke igen.",
    ],
};

const NB_WORDS: Words = Words {
    title_identify: "Identifiser deg med BankID",
    title_sign: "Signer betalingen med BankID",
    lead_identify: "Identifiser deg først med Mobilt BankID. Deretter signerer du betalingen.",
    lead_sign: "Kontroller beløp og mottaker i BankID-appen før du signerer.",
    scan: "Åpne BankID-appen på telefonen, trykk på Skann QR-kode og rett kameraet mot QR-koden.",
    qr_label: "QR-kode for BankID-appen",
    open_here: "Åpne BankID på denne enheten",
    try_again: "Prøv igjen",
    continue_: "Fortsett",
    updates_itself: "Siden oppdateres automatisk.",
};

const NB_HINTS: Hints = Hints {
    pending: ["Identifisering pågår.", "Signering pågår."],
    start: both("Start BankID-appen og skann QR-koden, eller åpne BankID på denne enheten."),
    searching: both("Søker etter BankID, dette kan ta litt tid …"),
    enter_code: [
        "Skriv inn sikkerhetskoden din i BankID-appen og bekreft identifiseringen.",
        "Skriv inn sikkerhetskoden din i BankID-appen og bekreft signeringen.",
    ],
    travel_document: both("Ta bilde av og les av reisedokumentet ditt med BankID-appen."),
    call_question: [
        "Svar på spørsmålet i BankID-appen. Identifiser deg aldri fordi noen i telefonen ber deg om det.",
        "Svar på spørsmålet i BankID-appen. Signer aldri fordi noen i telefonen ber deg om det.",
    ],
    complete: [
        "Du er identifisert. Betalingen klargjøres …",
        "Betalingen er signert.",
    ],
    failed: both("Ukjent feil. Prøv igjen."),
    user_cancel: [
        "Identifiseringen ble avbrutt i BankID-appen.",
        "Signeringen ble avbrutt i BankID-appen.",
    ],
    expired: both(
        "BankID-appen svarer ikke. Sjekk at den er startet og at du har internettilgang. Hvis du ikke har en gyldig BankID, kan du få en hos banken din. Prøv deretter igjen.",
    ),
    certificate: both(
        "BankID-en du prøver å bruke, er for gammel eller sperret. Bruk en annen BankID eller skaff deg en ny hos banken din.",
    ),
    start_failed: both(
        "BankID-appen kunne ikke startes eller kunne ikke lese QR-koden. Sjekk at BankID-appen er installert og oppdatert, og prøv igjen. Hvis du ikke har BankID, kan du få det hos banken din.",
    ),
    cancelled: both("Handlingen ble avbrutt. Prøv igjen."),
    already: both(
        "En identifisering eller signering for dette personnummeret er allerede startet. Prøv igjen.",
    ),
    timeout: [
        "Tiden for å identifisere deg gikk ut. Prøv igjen.",
        "Tiden for å signere gikk ut. Prøv igjen.",
    ],
    internal: both("Intern teknisk feil. Prøv igjen."),
    declined_call: [
        "Identifiseringen ble stoppet i BankID-appen på grunn av en telefonsamtale. Hvis noen ba deg identifisere deg, ikke prøv igjen.",
        "Signeringen ble stoppet i BankID-appen på grunn av en telefonsamtale. Hvis noen ba deg signere, ikke prøv igjen.",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    const PURPOSES: [BankIdPurpose; 2] = [BankIdPurpose::Identify, BankIdPurpose::Sign];

    #[test]
    fn every_hint_code_has_its_own_message_in_every_language_and_purpose() {
        for &(code, state) in HINT_CODES {
            for purpose in PURPOSES {
                let general = hint_message(None, purpose, state, Language::En);
                let en = hint_message(Some(code), purpose, state, Language::En);
                assert!(!en.is_empty(), "{code}");
                assert_ne!(en, general, "{code} {purpose:?} has a message of its own");
                for lang in Language::ALL {
                    let m = hint_message(Some(code), purpose, state, lang);
                    assert!(!m.trim().is_empty(), "{code} {purpose:?} {lang:?}");
                    if lang != Language::En {
                        assert_ne!(m, en, "{code} {purpose:?} {lang:?} is translated");
                    }
                }
            }
        }
    }

    #[test]
    fn the_general_and_complete_messages_are_translated_for_every_state() {
        for state in [
            BankIdState::Pending,
            BankIdState::Failed,
            BankIdState::Complete,
        ] {
            for purpose in PURPOSES {
                let en = hint_message(None, purpose, state, Language::En);
                for lang in Language::ALL {
                    let m = hint_message(None, purpose, state, lang);
                    assert!(!m.is_empty());
                    if lang != Language::En {
                        assert_ne!(m, en, "{state:?} {purpose:?} {lang:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_unknown_hint_code_falls_back_to_the_general_message_of_its_state() {
        for lang in Language::ALL {
            for purpose in PURPOSES {
                for state in [BankIdState::Pending, BankIdState::Failed] {
                    assert_eq!(
                        hint_message(Some("somethingNew"), purpose, state, lang),
                        hint_message(None, purpose, state, lang),
                    );
                }
            }
        }
        assert_eq!(
            hint_message(
                Some("somethingNew"),
                BankIdPurpose::Sign,
                BankIdState::Failed,
                Language::Sv
            ),
            "Okänt fel. Försök igen."
        );
        assert_eq!(
            hint_message(
                Some("somethingNew"),
                BankIdPurpose::Identify,
                BankIdState::Pending,
                Language::Sv
            ),
            "Identifiering pågår."
        );
    }

    #[test]
    fn a_pending_code_on_a_failed_order_reads_as_a_failure_not_as_progress() {
        let m = hint_message(
            Some("userSign"),
            BankIdPurpose::Sign,
            BankIdState::Failed,
            Language::En,
        );
        assert_eq!(m, "Unknown error. Please try again.");
    }

    #[test]
    fn sebs_already_in_progress_reads_like_bankids_already_in_progress() {
        for lang in Language::ALL {
            assert_eq!(
                hint_message(
                    Some("ALREADY_IN_PROGRESS"),
                    BankIdPurpose::Sign,
                    BankIdState::Failed,
                    lang
                ),
                hint_message(
                    Some("alreadyInProgress"),
                    BankIdPurpose::Sign,
                    BankIdState::Failed,
                    lang
                ),
            );
        }
    }

    #[test]
    fn the_swedish_messages_use_the_words_of_the_bankid_app() {
        let sv = |code, purpose, state| hint_message(Some(code), purpose, state, Language::Sv);
        assert_eq!(
            sv("userSign", BankIdPurpose::Sign, BankIdState::Pending),
            "Skriv in din säkerhetskod i BankID-appen och välj Skriv under."
        );
        assert_eq!(
            sv("userCancel", BankIdPurpose::Sign, BankIdState::Failed),
            "Underskriften avbröts i BankID-appen."
        );
        assert_eq!(
            sv("sebTimeout", BankIdPurpose::Identify, BankIdState::Failed),
            "Tiden för att identifiera dig tog slut. Försök igen."
        );
    }

    #[test]
    fn the_page_words_are_translated() {
        let en = words(Language::En);
        for lang in Language::ALL.into_iter().filter(|l| *l != Language::En) {
            let w = words(lang);
            for (a, b) in [
                (w.title_identify, en.title_identify),
                (w.title_sign, en.title_sign),
                (w.lead_identify, en.lead_identify),
                (w.lead_sign, en.lead_sign),
                (w.scan, en.scan),
                (w.qr_label, en.qr_label),
                (w.open_here, en.open_here),
                (w.try_again, en.try_again),
                (w.continue_, en.continue_),
                (w.updates_itself, en.updates_itself),
            ] {
                assert!(!a.is_empty());
                assert_ne!(a, b, "{lang:?}");
            }
        }
    }
}
