import Engine
import Synchronization

/// The model's parameter fields as lenses (`StoredField`: key path and offset), made once per
/// scalar type.
///
/// A key-path literal in generic code (`\Layer<S>.weights`) is instantiated by the runtime
/// every time it is evaluated, which costs microseconds: as much as a small layer's products;
/// finding a key path's offset costs a walk over its components. These accessors return
/// fields made once: for Float and Double from constants (in code specialised for one of them
/// the choice folds away), for any other scalar from a cache.
enum Lenses {
    private static let floatWeights = StoredField(\Layer<Float>.weights)
    private static let floatBiases = StoredField(\Layer<Float>.biases)
    private static let floatLayers = StoredField(\Network<Float>.layers)
    private static let doubleWeights = StoredField(\Layer<Double>.weights)
    private static let doubleBiases = StoredField(\Layer<Double>.biases)
    private static let doubleLayers = StoredField(\Network<Double>.layers)

    private static let cache = Mutex<[ObjectIdentifier: [String: Any]]>([:])

    @inline(__always)
    private static func lens<S, Root, Value, F, D>(_ scalar: S.Type, float: F, double: D, name: String,
                                                   _ make: () -> StoredField<Root, Value>) -> StoredField<Root, Value> {
        // The constants' types are exactly the requested ones when S is Float or Double.
        if S.self == Float.self { return unsafeBitCast(float, to: StoredField<Root, Value>.self) }
        if S.self == Double.self { return unsafeBitCast(double, to: StoredField<Root, Value>.self) }
        return cache.withLock { cache in
            if let found = cache[ObjectIdentifier(Root.self)]?[name] as? StoredField<Root, Value> { return found }
            let made = make()
            cache[ObjectIdentifier(Root.self), default: [:]][name] = made
            return made
        }
    }

    static func weights<S>() -> StoredField<Layer<S>, Matrix<S>> {
        lens(S.self, float: floatWeights, double: doubleWeights, name: "weights") { StoredField(\.weights) }
    }
    static func biases<S>() -> StoredField<Layer<S>, Vector<S>> {
        lens(S.self, float: floatBiases, double: doubleBiases, name: "biases") { StoredField(\.biases) }
    }
    static func layers<S>() -> StoredField<Network<S>, [Layer<S>]> {
        lens(S.self, float: floatLayers, double: doubleLayers, name: "layers") { StoredField(\.layers) }
    }
}
