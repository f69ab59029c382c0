package dev.edgesdk.core;

/**
 * The errors of {@code runtime/errors.py}, one exception type with a kind.
 *
 * <p>{@link Kind} names are the Python class names, so a message written by the app as
 * {@code "IntegrityError: ..."} maps back to the same class in Python ({@code runtime.devices}).
 */
public class SdkException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The Python class each kind corresponds to. */
    public enum Kind {
        ConfigError, InputError, IntegrityError, ExecutionError, TargetUnavailableError
    }

    private final Kind kind;

    public SdkException(Kind kind, String message) {
        super(message);
        this.kind = kind;
    }

    public SdkException(Kind kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public Kind kind() {
        return kind;
    }

    /** One line, {@code "Kind: message"}: what the app writes to its error file. */
    public String oneLine() {
        return kind.name() + ": " + String.valueOf(getMessage()).replaceAll("\\s+", " ").trim();
    }

    public static SdkException integrity(String message) {
        return new SdkException(Kind.IntegrityError, message);
    }

    public static SdkException config(String message) {
        return new SdkException(Kind.ConfigError, message);
    }
}
