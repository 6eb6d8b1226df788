import Engine
import Synchronization

/// The key paths of the model's parameter fields, made once per scalar type.
///
/// A key-path literal in generic code (`\Layer<S>.weights`) is instantiated by the runtime
/// every time it is evaluated, which costs microseconds: as much as a small layer's products.
/// These accessors return key paths made once: for Float and Double from constants (in code
/// specialised for one of them the choice folds away), for any other scalar from a cache.
enum Lenses {
    private static let floatWeights = \Layer<Float>.weights
    private static let floatBiases = \Layer<Float>.biases
    private static let floatLayers = \Network<Float>.layers
    private static let doubleWeights = \Layer<Double>.weights
    private static let doubleBiases = \Layer<Double>.biases
    private static let doubleLayers = \Network<Double>.layers

    private static let cache = Mutex<[ObjectIdentifier: [String: AnyKeyPath]]>([:])

    @inline(__always)
    private static func lens<S, Root, Value>(_ scalar: S.Type, float: AnyKeyPath, double: AnyKeyPath, name: String,
                                             _ make: () -> WritableKeyPath<Root, Value>) -> WritableKeyPath<Root, Value> {
        // The constants' types are exactly the requested ones when S is Float or Double.
        if S.self == Float.self { return unsafeDowncast(float, to: WritableKeyPath<Root, Value>.self) }
        if S.self == Double.self { return unsafeDowncast(double, to: WritableKeyPath<Root, Value>.self) }
        return cache.withLock { cache in
            if let found = cache[ObjectIdentifier(Root.self)]?[name] as? WritableKeyPath<Root, Value> { return found }
            let made = make()
            cache[ObjectIdentifier(Root.self), default: [:]][name] = made
            return made
        }
    }

    static func weights<S>() -> WritableKeyPath<Layer<S>, Matrix<S>> {
        lens(S.self, float: floatWeights, double: doubleWeights, name: "weights") { \.weights }
    }
    static func biases<S>() -> WritableKeyPath<Layer<S>, Vector<S>> {
        lens(S.self, float: floatBiases, double: doubleBiases, name: "biases") { \.biases }
    }
    static func layers<S>() -> WritableKeyPath<Network<S>, [Layer<S>]> {
        lens(S.self, float: floatLayers, double: doubleLayers, name: "layers") { \.layers }
    }
}
