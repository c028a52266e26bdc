/**
 * qupath-camseg: run an exported tumour classifier inside QuPath (no Python needed).
 *
 * Before: `qcamseg export-qupath MODEL_DIR --into-project PROJECT` puts CLASSIFIER.json and
 * CLASSIFIER.onnx into PROJECT/classifiers/pixel_classifiers/.
 *
 * Use: open an image of the project, optionally select annotations (e.g. the tissue), then
 * Automate › Script editor › Run (or "Run for project" to process many images).
 *
 * What it does, for the selected objects (or the whole image when nothing is selected):
 *   1. removes the objects this script made earlier with the same classifier (only those),
 *   2. creates annotations for each class (background `Ignore*` gets none), split into pieces,
 *      locked and tagged with metadata camseg_classifier = CLASSIFIER,
 *   3. adds class-area measurements named after the classifier to the selection (or the image).
 *
 * Unlike loadPixelClassifier(), it also works after the project folder was moved or copied to
 * another computer: if the model path stored in the JSON no longer exists, it uses the model file
 * with the same name next to the JSON.
 *
 * QuPath API used (0.5–0.7): buildFilePath, PROJECT_BASE_DIR, GsonTools, PixelClassifier,
 * createAnnotationsFromPixelClassifier(PixelClassifier, double, double, String...),
 * addPixelClassifierMeasurements(PixelClassifier, String).
 */

import com.google.gson.JsonObject
import com.google.gson.JsonParser
import com.google.gson.JsonPrimitive
import com.google.gson.JsonArray
import qupath.lib.classifiers.pixel.PixelClassifier
import qupath.lib.io.GsonTools

// ---------------- settings (edit these) ----------------
def classifierName = 'camseg-model'   // file name in classifiers/pixel_classifiers, without .json
double minAreaMicrons2 = 1000.0       // drop predicted pieces smaller than this (µm²)
double minHoleAreaMicrons2 = 1000.0   // fill holes smaller than this (µm²)
boolean createObjects = true
boolean addMeasurements = true
boolean replacePrevious = true        // remove objects this script created before (same classifier)
// -------------------------------------------------------

def imageData = getCurrentImageData()
if (imageData == null) {
    println 'camseg: open an image first'
    return
}
def cal = imageData.getServer().getPixelCalibration()
if (!cal.hasPixelSizeMicrons()) {
    println "camseg: ${imageData.getServer().getMetadata().getName()} has no pixel size; set it in the Image tab (µm per pixel) and run again"
    return
}

// Find the classifier JSON in the project, fix the model path if the project moved, and parse it.
if (getProject() == null) {
    println 'camseg: open the QuPath project that holds the classifier (File › Open project)'
    return
}
def jsonFile = new File(buildFilePath(PROJECT_BASE_DIR, 'classifiers', 'pixel_classifiers', classifierName + '.json'))
if (!jsonFile.isFile()) {
    println "camseg: ${jsonFile} not found; run: qcamseg export-qupath MODEL_DIR --into-project <this project> --name ${classifierName}"
    return
}
JsonObject json = JsonParser.parseString(jsonFile.getText('UTF-8')).getAsJsonObject()
JsonObject model = json.getAsJsonObject('op').getAsJsonObject('op').getAsJsonArray('ops').get(1).getAsJsonObject().getAsJsonObject('model')
boolean isOpenCV = model.get('dnn_model').getAsString() == 'OpenCVDnn'
String storedUri = isOpenCV ? model.get('pathModel').getAsString() : model.getAsJsonArray('uris').get(0).getAsString()
File storedFile = null
try { storedFile = new File(new URI(storedUri)) } catch (Exception ignored) { }
if (storedFile == null || !storedFile.isFile()) {
    def sibling = new File(jsonFile.getParentFile(), classifierName.replaceAll(/-djl$/, '') + (isOpenCV ? '.onnx' : '.pt'))
    if (!sibling.isFile()) {
        println "camseg: model file ${storedUri} is missing and ${sibling} does not exist; export the model into this project again"
        return
    }
    println "camseg: using ${sibling} (the project has moved since export)"
    if (isOpenCV) {
        model.add('pathModel', new JsonPrimitive(sibling.toURI().toString()))
    } else {
        def uris = new JsonArray()
        uris.add(sibling.toURI().toString())
        model.add('uris', uris)
    }
}
PixelClassifier classifier = GsonTools.getInstance().fromJson(json, PixelClassifier.class)

def hierarchy = imageData.getHierarchy()
def parents = new ArrayList(getSelectedObjects())
if (parents.isEmpty())
    parents = [hierarchy.getRootObject()]

def isOurs = { obj ->
    try {
        return obj.getMetadata().get('camseg_classifier') == classifierName
    } catch (MissingMethodException ignored) {  // QuPath < 0.5: no object metadata
        return false
    }
}

if (createObjects) {
    if (replacePrevious) {
        def previous = getAnnotationObjects().findAll { isOurs(it) && !parents.contains(it) }
        if (!previous.isEmpty()) {
            removeObjects(previous, true)
            println "camseg: removed ${previous.size()} objects from an earlier run of ${classifierName}"
        }
    }
    selectObjects(parents)
    createAnnotationsFromPixelClassifier(classifier, minAreaMicrons2, minHoleAreaMicrons2, 'SPLIT', 'SELECT_NEW')
    def created = new ArrayList(getSelectedObjects())
    created.each { obj ->
        try {
            obj.getMetadata().put('camseg_classifier', classifierName)
            obj.getMetadata().put('created_by', 'qupath-camseg')
        } catch (MissingMethodException ignored) { }
    }
    def summary = created.countBy { it.getPathClass()?.toString() ?: 'Unclassified' }
    println "camseg: created ${created.size()} annotations ${summary}"
}

if (addMeasurements) {
    selectObjects(parents)
    addPixelClassifierMeasurements(classifier, classifierName)
    println "camseg: added '${classifierName}' area measurements to ${parents.size()} object(s)"
}
resetSelection()
fireHierarchyUpdate()
