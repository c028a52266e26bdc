package testdoubles

/** Test double for the javafx StringProperty/BooleanProperty/... that PathPrefs returns. */
class PropertyDouble {
    final String name
    final Object defaultValue

    PropertyDouble(String name, Object defaultValue) {
        this.name = name
        this.defaultValue = defaultValue
    }

    Object get() { World.prefs.containsKey(name) ? World.prefs[name] : defaultValue }

    Object getValue() { get() }

    void set(Object value) {
        if (value == null) World.prefs.remove(name) else World.prefs[name] = value
    }

    void setValue(Object value) { set(value) }
}
