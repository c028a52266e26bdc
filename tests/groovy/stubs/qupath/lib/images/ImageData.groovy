package qupath.lib.images

import qupath.lib.images.servers.ImageServer
import qupath.lib.objects.hierarchy.PathObjectHierarchy

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.images.ImageData. */
class ImageData<T> {
    private final PathObjectHierarchy hierarchy
    private final ImageServer<T> server

    ImageData(PathObjectHierarchy hierarchy, ImageServer<T> server) {
        this.hierarchy = hierarchy
        this.server = server
    }

    PathObjectHierarchy getHierarchy() { hierarchy }

    ImageServer<T> getServer() { server }

    String getServerPath() { server.getPath() }
}
