// Prints one line per result on inference_results: video_id frame_id status detection-count.
//
// Needs kafka-clients and the JDK only; see docs/contract.md for the message fields.
//   java -cp "out/example:JARS/*" ResultsConsumer BOOTSTRAP [TOPIC [GROUP [MAX_RECORDS]]]

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.StringDeserializer;

public final class ResultsConsumer {
    // Workers write compact JSON; the patterns also allow spaces. A quote inside a string value
    // is escaped as \" so none of them can match text inside the error message.
    private static final Pattern VIDEO_ID = Pattern.compile("\"video_id\"\\s*:\\s*\"([^\"]*)\"");
    private static final Pattern FRAME_ID = Pattern.compile("\"frame_id\"\\s*:\\s*(\\d+)");
    private static final Pattern STATUS = Pattern.compile("\"status\"\\s*:\\s*\"([a-z]+)\"");
    private static final Pattern DETECTION = Pattern.compile("\"class_id\"\\s*:");

    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: ResultsConsumer BOOTSTRAP [TOPIC [GROUP [MAX_RECORDS]]]");
            System.exit(2);
        }
        String topic = args.length > 1 ? args[1] : "inference_results";
        long maxRecords = args.length > 3 ? Long.parseLong(args[3]) : Long.MAX_VALUE;
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, args.length > 2 ? args[2] : "results-example");
        // Results of an aborted exactly_once transaction are never shown.
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());

        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props);
        Thread main = Thread.currentThread();
        // Ctrl-C: wake the poll up so the consumer leaves its group before the JVM exits.
        Thread onCtrlC = new Thread(() -> {
            consumer.wakeup();
            try {
                main.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        Runtime.getRuntime().addShutdownHook(onCtrlC);
        long seen = 0;
        try (consumer) {
            consumer.subscribe(List.of(topic));
            while (seen < maxRecords) {
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(500))) {
                    String json = record.value();
                    if (json == null) {
                        continue; // not a result: workers never write a tombstone
                    }
                    System.out.printf("%s %s %s %d%n", first(VIDEO_ID, json), first(FRAME_ID, json),
                            first(STATUS, json), DETECTION.matcher(json).results().count());
                    seen++;
                }
                System.out.flush();
            }
        } catch (WakeupException e) {
            return; // Ctrl-C: the try block has closed the consumer, the hook lets the JVM exit.
        }
        // MAX_RECORDS reached: a hook left in place would wake a closed consumer at exit.
        Runtime.getRuntime().removeShutdownHook(onCtrlC);
    }

    private static String first(Pattern pattern, String json) {
        Matcher matcher = pattern.matcher(json);
        return matcher.find() ? matcher.group(1) : "?";
    }
}
