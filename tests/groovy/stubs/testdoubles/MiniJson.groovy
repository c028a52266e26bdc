package testdoubles

/**
 * Test helper (not QuPath): a small JSON reader/writer for the test doubles and the harness.
 * QuPath has no groovy-json, so neither does the test classpath; numbers are read as Double,
 * as Gson (QuPath's JSON library) reads them into a Map.
 */
class MiniJson {
    private final String s
    private int i = 0

    private MiniJson(String s) { this.s = s }

    static Object parse(String text) {
        def p = new MiniJson(text)
        def v = p.value()
        p.ws()
        if (p.i != p.s.length())
            throw new IllegalArgumentException("Trailing characters at " + p.i)
        return v
    }

    private void ws() { while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++ }

    private Object value() {
        ws()
        if (i >= s.length()) throw new IllegalArgumentException("Unexpected end of JSON")
        char c = s.charAt(i)
        switch (c) {
            case '{': return object()
            case '[': return array()
            case '"': return string()
            case 't': expect('true'); return true
            case 'f': expect('false'); return false
            case 'n': expect('null'); return null
            default: return number()
        }
    }

    private void expect(String word) {
        if (!s.startsWith(word, i)) throw new IllegalArgumentException("Bad JSON at " + i)
        i += word.length()
    }

    private Map object() {
        def map = new LinkedHashMap<String, Object>()
        i++
        ws()
        if (s.charAt(i) == '}' as char) { i++; return map }
        while (true) {
            ws()
            String key = string()
            ws()
            if (s.charAt(i++) != ':' as char) throw new IllegalArgumentException("Expected : at " + (i - 1))
            map.put(key, value())
            ws()
            char c = s.charAt(i++)
            if (c == '}' as char) return map
            if (c != ',' as char) throw new IllegalArgumentException("Expected , or } at " + (i - 1))
        }
    }

    private List array() {
        def list = []
        i++
        ws()
        if (s.charAt(i) == ']' as char) { i++; return list }
        while (true) {
            list << value()
            ws()
            char c = s.charAt(i++)
            if (c == ']' as char) return list
            if (c != ',' as char) throw new IllegalArgumentException("Expected , or ] at " + (i - 1))
        }
    }

    private String string() {
        if (s.charAt(i) != '"' as char) throw new IllegalArgumentException("Expected string at " + i)
        i++
        def sb = new StringBuilder()
        while (true) {
            char c = s.charAt(i++)
            if (c == '"' as char) return sb.toString()
            if (c == '\\' as char) {
                char e = s.charAt(i++)
                switch (e) {
                    case 'n': sb.append('\n'); break
                    case 't': sb.append('\t'); break
                    case 'r': sb.append('\r'); break
                    case 'b': sb.append('\b'); break
                    case 'f': sb.append('\f'); break
                    case 'u': sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break
                    default: sb.append(e)
                }
            } else {
                sb.append(c)
            }
        }
    }

    private Double number() {
        int start = i
        while (i < s.length() && "+-0123456789.eE".indexOf((int) s.charAt(i)) >= 0) i++
        if (start == i) throw new IllegalArgumentException("Bad JSON value at " + i)
        return Double.valueOf(s.substring(start, i))
    }

    static String write(Object v) {
        if (v == null) return 'null'
        if (v instanceof Boolean) return v.toString()
        if (v instanceof Number) {
            double d = ((Number) v).doubleValue()
            return (d == Math.rint(d) && Math.abs(d) < 1e15) ? String.valueOf((long) d) : String.valueOf(d)
        }
        if (v instanceof Map)
            return '{' + v.collect { k, x -> write(k.toString()) + ':' + write(x) }.join(',') + '}'
        if (v instanceof Collection || v instanceof Object[])
            return '[' + v.collect { write(it) }.join(',') + ']'
        def sb = new StringBuilder('"')
        for (char c : v.toString().toCharArray()) {
            if (c == '"' as char) sb.append('\\"')
            else if (c == '\\' as char) sb.append('\\\\')
            else if (c == '\n' as char) sb.append('\\n')
            else if (c == '\r' as char) sb.append('\\r')
            else if (c == '\t' as char) sb.append('\\t')
            else if (c < (' ' as char)) sb.append(String.format('\\u%04x', (int) c))
            else sb.append(c)
        }
        return sb.append('"').toString()
    }
}
