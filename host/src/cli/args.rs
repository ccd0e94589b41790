//! The command-line grammar, with help text in the user's language.

use std::net::SocketAddr;
use std::path::PathBuf;

use agros_sync_host::messages::Lang;
use clap::{value_parser, Arg, ArgAction, Command};

pub fn command(lang: Lang) -> Command {
    let t = |en: &'static str, es: &'static str| lang.pick(en, es).to_owned();
    let database = || Arg::new("database").value_name("DB").required(true).help(t("Database key from config.yaml", "Clave de la base de datos en config.yaml"));
    let class = || Arg::new("class").value_name("CLASS").required(true).help(t("Parse class name", "Nombre de la clase Parse"));

    let mut command = Command::new("agros-sync")
        .version(env!("CARGO_PKG_VERSION"))
        .about(t("Sync Agros records to Parse Server", "Sincroniza registros de Agros con Parse Server"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("config")
                .long("config")
                .global(true)
                .value_name("FILE")
                .env("AGROS_SYNC_CONFIG")
                .default_value("config.yaml")
                .value_parser(value_parser!(PathBuf))
                .help(t("Configuration file", "Fichero de configuración")),
        )
        .arg(
            Arg::new("tenant")
                .long("tenant")
                .global(true)
                .value_name("NAME")
                .env("AGROS_SYNC_TENANT")
                .help(t("Tenant to work on (default: the only one in config.yaml)", "Tenant sobre el que trabajar (por defecto: el único de config.yaml)")),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .global(true)
                .action(ArgAction::SetTrue)
                .help(t("Print machine-readable JSON", "Imprime JSON para scripts")),
        )
        .subcommand(
            Command::new("sync")
                .about(t("Create or update one object", "Crea o actualiza un objeto"))
                .arg(database())
                .arg(class())
                .arg(Arg::new("data").value_name("JSON").required(true).help(t("Object data as JSON, or - to read stdin", "Datos del objeto en JSON, o - para leer la entrada estándar")))
                .arg(Arg::new("local-id").long("local-id").value_name("ID").help(t("Local record id; syncing it again updates the same object", "Id del registro local; sincronizarlo de nuevo actualiza el mismo objeto"))),
        )
        .subcommand(
            Command::new("delete")
                .about(t("Delete one object", "Borra un objeto"))
                .arg(database())
                .arg(class())
                .arg(Arg::new("object-id").value_name("OBJECT_ID").required_unless_present("local-id").help(t("objectId to delete", "objectId a borrar")))
                .arg(Arg::new("local-id").long("local-id").value_name("ID").conflicts_with("object-id").help(t("Delete the object bound to this local id", "Borra el objeto ligado a este id local"))),
        )
        .subcommand(
            Command::new("import")
                .about(t("Sync every record of a JSON array or CSV file", "Sincroniza cada registro de un fichero JSON (array) o CSV"))
                .arg(database())
                .arg(class())
                .arg(Arg::new("file").value_name("FILE").required(true).value_parser(value_parser!(PathBuf)).help(t("A .json file holding an array of objects, or a .csv file with a header row", "Un fichero .json con un array de objetos, o un .csv con fila de cabecera")))
                .arg(Arg::new("local-id-fields").long("local-id-fields").value_name("FIELDS").help(t("Comma-separated fields whose values form each record's local id, so a second import updates instead of duplicating", "Campos separados por comas cuyos valores forman el id local de cada registro, para que una segunda importación actualice en vez de duplicar")))
                .arg(Arg::new("date-fields").long("date-fields").value_name("FIELDS").help(t("Comma-separated fields to store as Parse Date", "Campos separados por comas que se guardan como Date de Parse"))),
        )
        .subcommand(
            Command::new("query")
                .about(t("Query objects of a class", "Consulta objetos de una clase"))
                .arg(database())
                .arg(class())
                .arg(Arg::new("where").long("where").value_name("JSON").help(t("Parse `where` constraint as JSON", "Restricción `where` de Parse en JSON")))
                .arg(Arg::new("limit").long("limit").value_name("N").value_parser(value_parser!(u32)).help(t("Maximum number of objects (default: all)", "Número máximo de objetos (por defecto: todos)")))
                .arg(Arg::new("skip").long("skip").value_name("N").value_parser(value_parser!(u32)).help(t("Objects to skip", "Objetos a saltar")))
                .arg(Arg::new("order").long("order").value_name("FIELDS").help(t("Comma-separated sort fields, - for descending", "Campos de orden separados por comas, - para descendente")))
                .arg(Arg::new("keys").long("keys").value_name("FIELDS").help(t("Comma-separated fields to return", "Campos a devolver, separados por comas"))),
        )
        .subcommand(Command::new("status").about(t("Show every configured database's Parse client", "Muestra el cliente Parse de cada base de datos configurada")))
        .subcommand(Command::new("app-config").about(t("List the app_config table of the tenant", "Lista la tabla app_config del tenant")))
        .subcommand(
            Command::new("flush")
                .about(t("Send every queued write now", "Envía ahora todas las escrituras en cola"))
                .arg(Arg::new("database").value_name("DB").help(t("Only this database (default: every synced database)", "Solo esta base de datos (por defecto: todas las sincronizadas)"))),
        )
        .subcommand(
            Command::new("outbox")
                .about(t("Inspect and manage queued and dead-lettered writes", "Consulta y gestiona las escrituras en cola y las fallidas"))
                .subcommand_required(true)
                .subcommand(
                    Command::new("list")
                        .about(t("List outbox entries", "Lista las entradas de la cola"))
                        .arg(Arg::new("database").long("database").value_name("DB").help(t("Only this database", "Solo esta base de datos")))
                        .arg(Arg::new("dead").long("dead").action(ArgAction::SetTrue).conflicts_with("pending").help(t("Only dead letters", "Solo las fallidas")))
                        .arg(Arg::new("pending").long("pending").action(ArgAction::SetTrue).help(t("Only pending entries", "Solo las pendientes")))
                        .arg(Arg::new("limit").long("limit").value_name("N").default_value("100").value_parser(value_parser!(u32)).help(t("Maximum entries listed", "Número máximo de entradas"))),
                )
                .subcommand(
                    Command::new("show")
                        .about(t("Show one entry with its payload", "Muestra una entrada con sus datos"))
                        .arg(Arg::new("id").value_name("ID").required(true).value_parser(value_parser!(u64)).help(t("Outbox entry id", "Id de la entrada"))),
                )
                .subcommand(
                    Command::new("retry")
                        .about(t("Send dead letters again", "Vuelve a enviar entradas fallidas"))
                        .arg(Arg::new("ids").value_name("ID").num_args(1..).required_unless_present("all").value_parser(value_parser!(u64)).help(t("Dead letter ids", "Ids de las entradas fallidas")))
                        .arg(Arg::new("all").long("all").action(ArgAction::SetTrue).help(t("Every dead letter", "Todas las entradas fallidas"))),
                )
                .subcommand(
                    Command::new("discard")
                        .about(t("Delete entries without sending them", "Borra entradas sin enviarlas"))
                        .arg(Arg::new("ids").value_name("ID").num_args(1..).required(true).value_parser(value_parser!(u64)).help(t("Outbox entry ids", "Ids de las entradas"))),
                ),
        )
        .subcommand(
            Command::new("serve")
                .about(t(
                    "Serve the HTTP API for every tenant, flush in the background and reload the plugin when it changes, until interrupted",
                    "Sirve la API HTTP de todos los tenants, envía en segundo plano y recarga el plugin cuando cambia, hasta que se interrumpa",
                ))
                .arg(
                    Arg::new("listen")
                        .long("listen")
                        .value_name("ADDR")
                        .default_value("127.0.0.1:8970")
                        .value_parser(value_parser!(SocketAddr))
                        .help(t("Address of the HTTP API; the token comes from AGROS_SYNC_API_TOKEN", "Dirección de la API HTTP; el token se lee de AGROS_SYNC_API_TOKEN")),
                )
                .arg(Arg::new("interval").long("interval").value_name("MS").default_value("1000").value_parser(value_parser!(u64)).help(t("How often to look for due entries, in milliseconds", "Cada cuánto buscar entradas pendientes, en milisegundos"))),
        )
        .subcommand(
            Command::new("reload")
                .about(t("Make a running `agros-sync serve` load the plugin file again", "Hace que un `agros-sync serve` en marcha vuelva a cargar el fichero del plugin"))
                .arg(
                    Arg::new("url")
                        .long("url")
                        .value_name("URL")
                        .env("AGROS_SYNC_API_URL")
                        .default_value("http://127.0.0.1:8970")
                        .help(t("Base URL of the running server's API", "URL base de la API del servidor en marcha")),
                ),
        );

    if lang == Lang::Es {
        command = spanish_help(command);
    }
    command
}

/// Spanish headings for the help screens and Spanish help for `--help` and
/// `--version`.
///
/// NOTE: clap's own parse errors ("unexpected argument …") stay in English.
fn spanish_help(command: Command) -> Command {
    let subcommand_names: Vec<String> = command.get_subcommands().map(|c| c.get_name().to_owned()).collect();
    let mut command = command
        .help_template("{about}\n\nUso: {usage}\n\nComandos:\n{subcommands}\n\nOpciones:\n{options}")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(Arg::new("help").short('h').long("help").global(true).action(ArgAction::Help).help("Muestra esta ayuda"))
        .arg(Arg::new("version").short('V').long("version").action(ArgAction::Version).help("Muestra la versión"));
    for name in subcommand_names {
        command = command.mut_subcommand(name, spanish_subcommand_help);
    }
    command
}

fn spanish_subcommand_help(sub: Command) -> Command {
    let template = if sub.has_subcommands() {
        "{about}\n\nUso: {usage}\n\nComandos:\n{subcommands}\n\nOpciones:\n{options}"
    } else if sub.get_positionals().next().is_some() {
        "{about}\n\nUso: {usage}\n\nArgumentos:\n{positionals}\n\nOpciones:\n{options}"
    } else {
        "{about}\n\nUso: {usage}\n\nOpciones:\n{options}"
    };
    let names: Vec<String> = sub.get_subcommands().map(|c| c.get_name().to_owned()).collect();
    let mut sub = sub.help_template(template);
    for name in names {
        sub = sub.mut_subcommand(name, spanish_subcommand_help);
    }
    sub
}
