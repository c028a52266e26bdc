package testdoubles

/** Test double for com.google.gson.Gson: fromJson(String, Class) into Maps/Lists, numbers as Double. */
class GsonDouble {
    Object fromJson(String json, Class type) {
        def value = MiniJson.parse(json)
        if (value != null && !type.isInstance(value))
            throw new IllegalArgumentException("Test double: JSON is not a " + type.name)
        return value
    }

    String toJson(Object value) { MiniJson.write(value) }
}
