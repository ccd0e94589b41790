//! Messages a person reads, in Spanish when the locale is Spanish and in
//! English otherwise. Error codes and JSON output are the same in both.

/// The language of user-facing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
}

impl Lang {
    /// Picks the language from `LC_ALL`, `LC_MESSAGES` and `LANG`, the first
    /// one set winning (POSIX order). `es`, `es_ES.UTF-8`, `es_AR`… are Spanish.
    pub fn from_env() -> Self {
        let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|value| !value.is_empty())
            .unwrap_or_default();
        Self::from_locale(&locale)
    }

    pub fn from_locale(locale: &str) -> Self {
        if locale == "es" || locale.starts_with("es_") || locale.starts_with("es.") || locale.starts_with("es-") {
            Lang::Es
        } else {
            Lang::En
        }
    }

    /// Picks the English or the Spanish text.
    pub fn pick<'a>(self, en: &'a str, es: &'a str) -> &'a str {
        match self {
            Lang::En => en,
            Lang::Es => es,
        }
    }
}

/// Builds the one-line message for an error code. `subject` is the value the error
/// is about; `detail` is the English detail, shown as is in English.
pub fn error_message(lang: Lang, code: &str, subject: &str, detail: &str) -> String {
    if lang == Lang::En {
        return detail.to_owned();
    }
    let text = match code {
        "unknown-database" => format!("base de datos desconocida «{subject}»; use una clave de `databases:` en config.yaml"),
        "sync-disabled" => format!("la base de datos «{subject}» tiene `sync: false` en config.yaml; ponga `sync: true` para sincronizarla"),
        "invalid-class-name" => format!("nombre de clase no válido «{subject}»; use una letra seguida de letras, dígitos o '_'"),
        "invalid-field-name" => format!("nombre de campo no válido «{subject}»; use una letra seguida de letras, dígitos o '_'"),
        "invalid-json" => format!("JSON no válido: {detail}"),
        "invalid-value" => format!("valor no válido en el campo «{subject}»: {detail}"),
        "object-too-large" => format!("el objeto de la clase «{subject}» es demasiado grande: {detail}"),
        "object-not-found" => format!("el objeto «{subject}» no existe en el servidor"),
        "server-rejected" => format!("el servidor Parse rechazó la petición sobre «{subject}»: {detail}"),
        "server-unavailable" => format!("no se pudo contactar con el servidor Parse ({subject}): {detail}"),
        "unauthorized" => format!("el servidor Parse rechazó las claves de «{subject}»; revise master_key en config.yaml"),
        "request-denied" => format!("petición denegada por el host: {subject} no es un servidor Parse de este tenant"),
        "state-store" => format!("falló el almacén de estado: {detail}"),
        "plugin-trap" => format!("el plugin falló y se reinició su instancia: {detail}"),
        "plugin-unavailable" => format!("no se pudo cargar el plugin: {detail}"),
        "plugin-timeout" => format!("la llamada al plugin superó su tiempo y se detuvo: {detail}"),
        "reload-failed" => format!("no se recargó el plugin; sigue sirviendo la versión anterior: {detail}"),
        "unknown-tenant" => format!("tenant desconocido «{subject}»; use un nombre de `tenants:` en config.yaml (sin `tenants:`, el único tenant es «default»)"),
        "tenant-required" => "config.yaml define varios tenants; elija uno con --tenant o AGROS_SYNC_TENANT".to_owned(),
        "unauthorized-api" => "falta el token de la API o no es válido; envíe `Authorization: Bearer <token>`".to_owned(),
        "payload-too-large" => format!("el cuerpo de la petición es demasiado grande: {detail}"),
        "not-found" => format!("no existe la ruta {subject}; vea /openapi.json"),
        "method-not-allowed" => format!("método no permitido en {subject}"),
        "server-unreachable" => format!("no se pudo contactar con agros-sync serve en {subject}: {detail}"),
        "unexpected-response" => format!("la respuesta de {subject} no es de agros-sync serve; revise --url: {detail}"),
        "unsupported-media-type" => format!("el cuerpo de la petición debe enviarse con Content-Type: application/json, no {subject}"),
        "request-timeout" => format!("el cuerpo de la petición no llegó a tiempo: {detail}"),
        "invalid-config" => format!("configuración no válida: {detail}"),
        "invalid-csv" => format!("CSV no válido: {detail}"),
        "import-incomplete" => format!("importación incompleta de «{subject}»: {detail}"),
        "flush-incomplete" => format!("envío incompleto: {detail}"),
        "entry-not-found" => format!("no existe la entrada {subject} de la cola; véalas con `agros-sync outbox list`"),
        "dead-letter-not-found" => format!("la entrada {subject} de la cola no está entre las fallidas; véalas con `agros-sync outbox list --dead`"),
        "invalid-argument" => format!("argumento no válido: {detail}"),
        "io-error" => format!("error de E/S: {detail}"),
        _ => format!("error interno: {detail}"),
    };
    text
}

/// Builds the one-line message for an error the Parse server (or a proxy in
/// front of it) returned. `detail` is the server's own text, so the message
/// adds what it was about and what to do.
pub fn server_error_message(lang: Lang, code: &str, subject: &str, detail: &str, parse_code: Option<i32>, http_status: Option<u16>) -> String {
    let codes = match (parse_code, http_status) {
        (Some(parse), Some(http)) => format!(" (Parse {parse}, HTTP {http})"),
        (Some(parse), None) => format!(" (Parse {parse})"),
        (None, Some(http)) => format!(" (HTTP {http})"),
        (None, None) => String::new(),
    };
    match (lang, code) {
        (Lang::En, "object-not-found") => format!("object {subject} does not exist on the server: {detail}{codes}"),
        (Lang::Es, "object-not-found") => format!("el objeto «{subject}» no existe en el servidor: {detail}{codes}"),
        (Lang::En, "unauthorized") => format!("the Parse server refused the keys for {subject}: {detail}{codes}; check master_key in config.yaml"),
        (Lang::Es, "unauthorized") => format!("el servidor Parse rechazó las claves de «{subject}»: {detail}{codes}; revise master_key en config.yaml"),
        (Lang::En, "server-unavailable") => format!("the Parse server is unavailable: {detail}{codes}; writes stay queued and are retried"),
        (Lang::Es, "server-unavailable") => format!("el servidor Parse no está disponible: {detail}{codes}; las escrituras siguen en cola y se reintentan"),
        (Lang::En, "object-too-large") => format!("the Parse server rejected {subject} as too large: {detail}{codes}; raise its maxUploadSize or send less data"),
        (Lang::Es, "object-too-large") => format!("el servidor Parse rechazó «{subject}» por demasiado grande: {detail}{codes}; suba su maxUploadSize o envíe menos datos"),
        (Lang::En, _) => format!("the Parse server rejected the request on {subject}: {detail}{codes}; fix the data or the class schema"),
        (Lang::Es, _) => format!("el servidor Parse rechazó la petición sobre «{subject}»: {detail}{codes}; corrija los datos o el esquema de la clase"),
    }
}

/// Builds the message for an `AGROS_SYNC_API_TOKEN` that is set but empty or
/// only whitespace, which `agros-sync serve` rejects at start.
pub fn blank_api_token_message(lang: Lang, variable: &str) -> String {
    match lang {
        Lang::En => format!("{variable} is set but empty or only whitespace; unset it to run the API without a token, or set it to the token that requests must send"),
        Lang::Es => format!("{variable} está definida pero vacía o solo tiene espacios; quítela para servir la API sin token, o póngale el token que deben enviar las peticiones"),
    }
}

/// Builds the message for an id field of a request (`object_id`,
/// `local_id`) that is present but empty or only whitespace.
pub fn blank_id_field_message(lang: Lang, field: &str) -> String {
    match lang {
        Lang::En => format!("\"{field}\" is empty or only whitespace; send a non-blank id"),
        Lang::Es => format!("«{field}» está vacío o solo tiene espacios; envíe un id que no esté en blanco"),
    }
}
