// Kafka's own view of the broker configs, for exprun's catalog and its checks.
//
// Run with the broker's jars on the classpath (a single-file Java 17 source program):
//   java -cp "$(jars)" tests/spec/KafkaServerConfigs.java catalog
//       prints {"kafka_version", "source", "configs": {name: ConfigDef type}} as JSON
//   java -cp "$(jars)" tests/spec/KafkaServerConfigs.java check < KEY<TAB>VALUE lines
//       prints, per line, ConfigDef's type check and the broker's whole config check:
//       "ok" or "rejected: <message>", tab-separated
// tests/spec/test_server_settings.py runs both; it is the place to regenerate the catalog from.

import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

import kafka.server.KafkaConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.utils.internals.AppInfoParser;
import org.apache.kafka.server.config.AbstractKafkaConfig;

public class KafkaServerConfigs {
    static final String SOURCE = "org.apache.kafka.server.config.AbstractKafkaConfig.CONFIG_DEF";

    public static void main(String[] args) throws Exception {
        // KafkaConfig (what kafka.Kafka parses server.properties with) must use this very def.
        if (KafkaConfig.configDef() != AbstractKafkaConfig.CONFIG_DEF) {
            throw new IllegalStateException("KafkaConfig.configDef() is not " + SOURCE);
        }
        String mode = args.length > 0 ? args[0] : "";
        switch (mode) {
            case "catalog" -> catalog();
            case "check" -> check();
            default -> {
                System.err.println("usage: KafkaServerConfigs catalog | check < KEY<TAB>VALUE lines");
                System.exit(2);
            }
        }
    }

    static void catalog() {
        Map<String, String> types = new TreeMap<>();
        for (ConfigDef.ConfigKey key : AbstractKafkaConfig.CONFIG_DEF.configKeys().values()) {
            types.put(key.name, key.type.name());
        }
        StringBuilder out = new StringBuilder();
        out.append("{\"kafka_version\": ").append(quote(AppInfoParser.getVersion()));
        out.append(", \"source\": ").append(quote(SOURCE));
        out.append(", \"configs\": {");
        String sep = "";
        for (Map.Entry<String, String> e : types.entrySet()) {
            out.append(sep).append(quote(e.getKey())).append(": ").append(quote(e.getValue()));
            sep = ", ";
        }
        out.append("}}");
        System.out.println(out);
    }

    static void check() throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            String[] kv = line.split("\t", 2);
            String name = kv[0];
            String value = kv.length > 1 ? kv[1] : "";
            System.out.println(typeVerdict(name, value) + "\t" + brokerVerdict(name, value));
        }
    }

    /** What ConfigDef.parse does to one value: parse it as the key's declared type. */
    static String typeVerdict(String name, String value) {
        ConfigDef.ConfigKey key = AbstractKafkaConfig.CONFIG_DEF.configKeys().get(name);
        if (key == null) {
            return "rejected: unknown config";
        }
        try {
            ConfigDef.parseType(name, value, key.type);
            return "ok";
        } catch (ConfigException e) {
            return "rejected: " + oneLine(e.getMessage());
        }
    }

    /** The broker's own check: a server.properties like exprun's, plus this one entry. */
    static String brokerVerdict(String name, String value) {
        Properties props = new Properties();
        props.put("process.roles", "broker,controller");
        props.put("node.id", "1");
        props.put("controller.quorum.bootstrap.servers", "127.0.0.1:9093");
        props.put("listeners", "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093");
        props.put("advertised.listeners", "PLAINTEXT://127.0.0.1:9092");
        props.put("inter.broker.listener.name", "PLAINTEXT");
        props.put("controller.listener.names", "CONTROLLER");
        props.put("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT");
        props.put("log.dirs", "/nonexistent/exprun-config-check");
        props.put(name, value);
        try {
            KafkaConfig.fromProps(props, false);
            return "ok";
        } catch (ConfigException | IllegalArgumentException e) {
            return "rejected: " + oneLine(e.getMessage());
        }
    }

    static String oneLine(String message) {
        return String.valueOf(message).replaceAll("\\s+", " ");
    }

    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
