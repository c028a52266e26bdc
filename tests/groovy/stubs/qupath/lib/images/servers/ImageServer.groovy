package qupath.lib.images.servers

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.images.servers.ImageServer (an interface there). */
class ImageServer<T> {
    private final List<URI> uris

    ImageServer(Collection<URI> uris) { this.uris = new ArrayList<>(uris) }

    Collection<URI> getURIs() { Collections.unmodifiableList(uris) }

    String getPath() { uris ? uris[0].toString() : null }
}
